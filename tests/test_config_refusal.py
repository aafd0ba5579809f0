"""Configs the filter must refuse (contract section 2): Envoy does not start and logs one
critical line ``invalid llm-api-guard config at `<dotted.path>`: <why>``, and
``dist/llm-api-guard config check FILE`` gives the same verdict offline (exit 1, the same message
as one stderr line).

Every case runs through the CLI; a representative subset also through Envoy (each refused start
costs ~1.5 s), where the CLI's message must equal Envoy's exactly: the file holds the very text
Envoy received.
"""
from __future__ import annotations

import json
import re

import pytest

from harness import PEPPER_ENV, TEST_PEPPER, Gateway, filter_config
from keytool import API_KEY_AUTH, CONFIG_ERROR_RE, cli, one_line

KEYS_ON = {"api_key_management": {"enabled": True}}
NO_PEPPER = {PEPPER_ENV: None}

# (id, config (dict, or str sent verbatim), env for Envoy and the CLI, dotted path or "" for
#  none, regex the reason must match)
CASES = [
    ("unknown-field", filter_config(gateway_hardening={"waf": {"foo": 1}}), {},
     "gateway_hardening.waf.foo", r"unknown field `foo`"),
    ("unknown-section", filter_config({"rate_limits": {"enabled": False}}), {},
     "rate_limits", r"unknown field `rate_limits`"),
    ("wrong-type", filter_config(gateway_hardening={"request_limits": {
        "max_request_size_bytes": "big"}}), {},
     "gateway_hardening.request_limits.max_request_size_bytes", r"invalid type: string \"big\""),
    ("negative", filter_config(gateway_hardening={"request_limits": {
        "max_request_size_bytes": -1}}), {},
     "gateway_hardening.request_limits.max_request_size_bytes", r"-1"),
    ("zero-body-limit", filter_config(gateway_hardening={"request_limits": {
        "max_request_size_bytes": 0}}), {},
     "gateway_hardening.request_limits.max_request_size_bytes", r"at least 1"),
    ("bool-for-number", filter_config(gateway_hardening={"request_limits": {
        "max_header_size_bytes": True}}), {},
     "gateway_hardening.request_limits.max_header_size_bytes", r"invalid type: boolean"),
    ("section-is-a-string", filter_config({"authentication": "off"}), {},
     "authentication", r"expected a JSON object"),
    ("max-ttl-below-default", filter_config(api_key_management={
        "enabled": True, "expiration": {"default_ttl_hours": 48, "max_ttl_hours": 24}}), {},
     "api_key_management.expiration.max_ttl_hours", r"default_ttl_hours"),
    ("top-level-array", "[1, 2]", {}, "", r"must be a JSON object"),
    ("top-level-string", '"hello"', {}, "", r"must be a JSON object"),
    ("malformed-json", '{"gateway_hardening": {"waf": ', {}, "gateway_hardening.waf",
     r"EOF while parsing"),
    ("jwt-without-issuer", filter_config(authentication={
        "enabled": True, "methods": {"jwt": {"enabled": True, "audience": "moltbot-api",
                                             "jwks": {"keys": []}},
                                     "api_key": {"enabled": False},
                                     "mtls": {"enabled": False}}}), {},
     "authentication.methods.jwt.issuer", r"required"),
    ("api-key-without-key-management", filter_config(authentication=API_KEY_AUTH), {},
     "authentication.methods.api_key.enabled", r"api_key_management"),
    ("missing-pepper", filter_config(KEYS_ON), NO_PEPPER,
     "api_key_management.storage.pepper_env", r"LLM_API_GUARD_PEPPER is not set"),
    ("empty-pepper", filter_config(KEYS_ON), {PEPPER_ENV: ""},
     "api_key_management.storage.pepper_env", r"LLM_API_GUARD_PEPPER is not set"),
    ("short-pepper", filter_config(KEYS_ON), {PEPPER_ENV: "fifteen-bytes!!"},
     "api_key_management.storage.pepper_env", r"at least 16 bytes"),
    ("waf-not-implemented", filter_config(gateway_hardening={"waf": {"enabled": True}}), {},
     "gateway_hardening.waf", r"not implemented yet"),
    ("waf-on-by-default", filter_config(gateway_hardening={"waf": None}), {},
     "gateway_hardening.waf", r"not implemented yet"),
    ("rate-limiting-not-implemented", filter_config(api_rate_limiting={"enabled": True}), {},
     "api_rate_limiting", r"not implemented yet"),
    ("revocation-cannot-be-disabled", filter_config(api_key_management={
        "enabled": True, "revocation": {"enabled": False}}), {},
     "api_key_management.revocation.enabled", r"cannot be disabled"),
    ("plaintext-storage", filter_config(api_key_management={
        "enabled": True, "storage": {"hash_for_verification": False}}), {},
     "api_key_management.storage.hash_for_verification", r"must be true"),
    ("bad-key-record", filter_config(api_key_management={
        "enabled": True, "keys": [{"id": "short", "hash": "hmac-sha256:AAAA", "user": "u",
                                   "created_at": "2026-01-01T00:00:00Z",
                                   "expires_at": "2026-01-02T00:00:00Z"}]}), {},
     "api_key_management.keys[0].id", r"12 characters"),
]
ENVOY_CASES = {"unknown-field", "wrong-type", "malformed-json", "missing-pepper",
               "waf-not-implemented", "api-key-without-key-management"}
IDS = [c[0] for c in CASES]


def text_of(cfg) -> str:
    """The exact configuration text Envoy receives (harness.wasm_http_filter)."""
    return cfg if isinstance(cfg, str) else json.dumps(cfg)


def expected_message(path: str) -> str:
    return (f"invalid llm-api-guard config at `{path}`: " if path
            else "invalid llm-api-guard config: ")


def cli_env(env: dict) -> dict:
    """The CLI's environment: the harness's default pepper, overridden like Envoy's."""
    e = {PEPPER_ENV: TEST_PEPPER}
    e.update(env)
    return e


def run_check(tmp_path, cfg, env):
    f = tmp_path / "config.json"
    f.write_text(text_of(cfg))
    e = cli_env(env)
    pepper = e.pop(PEPPER_ENV)
    return cli("config", "check", str(f), pepper=pepper, env=e, check=False), f


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_refuses(tmp_path, cli_path, case):
    _, cfg, env, path, why = case
    res, _ = run_check(tmp_path, cfg, env)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    line = one_line(res.stderr)
    prefix = "llm-api-guard: " + expected_message(path)
    assert line.startswith(prefix), line
    assert re.search(why, line[len(prefix):]), line
    pepper = env.get(PEPPER_ENV)
    if pepper:
        assert pepper not in line  # never print the secret


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ENVOY_CASES],
                         ids=[c[0] for c in CASES if c[0] in ENVOY_CASES])
def test_envoy_refuses_with_the_same_message(tmp_path, wasm_path, cli_path, case):
    _, cfg, env, path, why = case
    log = Gateway.start(cfg, env=env, expect_failure=True)
    lines = [ln for ln in log.splitlines() if CONFIG_ERROR_RE.search(ln)]
    assert len(lines) == 1, "expected one config error line:\n" + "\n".join(lines or [log[-3000:]])
    assert "[critical]" in lines[0], lines[0]
    message = CONFIG_ERROR_RE.search(lines[0]).group(1)
    assert message.startswith(expected_message(path)), message
    assert re.search(why, message), message
    res, _ = run_check(tmp_path, cfg, env)
    assert res.returncode == 1
    assert one_line(res.stderr) == "llm-api-guard: " + message  # the same verdict, verbatim


VALID = [
    ("all-off", filter_config(), {}),
    ("limits-custom", filter_config(gateway_hardening={"request_limits": {
        "max_request_size_bytes": 1, "max_header_size_bytes": 256}}), {}),
    ("keys-and-api-key-auth", filter_config(api_key_management={"enabled": True},
                                            authentication=API_KEY_AUTH), {}),
    ("pepper-exactly-16-bytes", filter_config(KEYS_ON), {PEPPER_ENV: "sixteen-bytes!!!"}),
    ("disabled-section-with-guide-fields", filter_config(api_rate_limiting={
        "enabled": False, "strategies": {"ip_based": {"per_ip_per_minute": 50}},
        "enforcement": {"action": "throttle"}}), {}),
]


@pytest.mark.parametrize("case", VALID, ids=[c[0] for c in VALID])
def test_cli_accepts_valid_config(tmp_path, cli_path, case):
    _, cfg, env = case
    res, f = run_check(tmp_path, cfg, env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{f}: config ok\n"


def test_cli_check_of_missing_file_fails_cleanly(tmp_path, cli_path):
    res = cli("config", "check", str(tmp_path / "nope.json"), check=False)
    assert res.returncode == 1 and res.stdout == ""
    assert "nope.json" in one_line(res.stderr)


def test_syntax_error_names_no_placeholder_path(tmp_path, cli_path):
    res, _ = run_check(tmp_path, "{not json", {})
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert "line 1 column 2" in line
    assert "`?`" not in line, line


ARRAY_SECTIONS = [
    ("request-limits-as-array", filter_config(gateway_hardening={"request_limits": [5, 300]}),
     "gateway_hardening.request_limits"),
    ("section-as-array", filter_config({"api_rate_limiting": [False, None, None, None]}),
     "api_rate_limiting"),
]


@pytest.mark.parametrize("case", ARRAY_SECTIONS, ids=[c[0] for c in ARRAY_SECTIONS])
def test_array_instead_of_object_is_refused(tmp_path, cli_path, case):
    _, cfg, path = case
    res, _ = run_check(tmp_path, cfg, {})
    assert res.returncode == 1, res.stdout
    assert one_line(res.stderr).startswith("llm-api-guard: " + expected_message(path))
