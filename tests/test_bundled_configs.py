"""Checks of every YAML file under envoy/ (discovered, so a new file is covered automatically).

Kinds: an Envoy bootstrap (has ``static_resources``), a docker compose file (has ``services``),
an Istio ``WasmPlugin``. Any other YAML fails ``test_every_yaml_has_a_known_kind``: teach this
module about the new kind.

Bootstraps are run through ``envoy --mode validate`` on a copy whose file paths are mapped to
local files: ``*.wasm`` -> dist/llm_api_guard.wasm, certificate / key files -> the output of
scripts/gen_certs.sh (by file name). Validate mode loads the wasm and runs the filter's
on_configure, so with the real filter this also checks the bundled filter config (the pepper is
set to the test pepper). Without dist/llm_api_guard.wasm the validation with the filter is
skipped (a failure under CI) and a copy without the wasm filter is validated instead.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import PEPPER_ENV, REPO, TEST_PEPPER, build_bootstrap, envoy_binary, ensure_certs

ENVOY_DIR = REPO / "envoy"
YAMLS = sorted(p for p in ENVOY_DIR.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
WASM_FILTER = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager")
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
SECTIONS = {"api_key_management", "authentication", "gateway_hardening", "api_rate_limiting"}
CERT_SUFFIXES = (".pem", ".key", ".crt")


def kind_of(doc) -> str:
    if not isinstance(doc, dict):
        return "unknown"
    if "static_resources" in doc:
        return "bootstrap"
    if "services" in doc:
        return "compose"
    if doc.get("kind") == "WasmPlugin" and str(doc.get("apiVersion", "")).startswith(
            "extensions.istio.io/"):
        return "wasmplugin"
    return "unknown"


def load_docs(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


DOCS = [(p, i, d) for p in YAMLS for i, d in enumerate(load_docs(p))]


def of_kind(kind: str) -> list:
    return [pytest.param(p, d, id=f"{p.name}#{i}") for p, i, d in DOCS if kind_of(d) == kind]


BOOTSTRAPS = of_kind("bootstrap")
COMPOSES = of_kind("compose")
WASMPLUGINS = of_kind("wasmplugin")


def walk(node):
    """Every dict inside ``node`` (depth first, including ``node``)."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def hcms(boot: dict) -> list[dict]:
    return [d["typed_config"] for d in walk(boot)
            if d.get("name") == "envoy.filters.network.http_connection_manager"]


def wasm_plugins(boot: dict) -> list[dict]:
    return [f["typed_config"]["config"] for h in hcms(boot) for f in h.get("http_filters", [])
            if f.get("name") == WASM_FILTER]


def cluster_refs(cfg) -> set[str]:
    """Values of every "cluster" key in a filter config (keyset, remote_jwks, ...)."""
    return {d["cluster"] for d in walk(cfg) if isinstance(d.get("cluster"), str)}


def filenames(boot: dict) -> list[str]:
    return [d["filename"] for d in walk(boot) if isinstance(d.get("filename"), str)]


def map_paths(boot: dict, wasm: Path | None, certs: Path) -> dict:
    """A copy with local file paths; ``wasm=None`` removes the wasm filter."""
    out = copy.deepcopy(boot)
    for d in walk(out):
        fn = d.get("filename")
        if not isinstance(fn, str):
            continue
        if fn.endswith(".wasm"):
            d["filename"] = str(wasm) if wasm else fn
        elif fn.endswith(CERT_SUFFIXES):
            local = certs / Path(fn).name
            assert local.is_file(), f"{fn}: not a file that scripts/gen_certs.sh creates"
            d["filename"] = str(local)
        else:
            raise AssertionError(f"unexpected file reference {fn!r}: teach map_paths about it")
    if wasm is None:
        for h in hcms(out):
            h["http_filters"] = [f for f in h["http_filters"] if f.get("name") != WASM_FILTER]
    return out


def validate(boot: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    cfg = tmp_path / "bootstrap.yaml"
    cfg.write_text(json.dumps(boot))
    env = dict(os.environ)
    env[PEPPER_ENV] = TEST_PEPPER
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(cfg),
                           "--disable-hot-restart", "-l", "warn"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)


def filter_configs() -> list:
    """Every bundled filter config as (id, parsed JSON or the exception)."""
    out = []
    for p, i, d in DOCS:
        k = kind_of(d)
        if k == "bootstrap":
            for n, plugin in enumerate(wasm_plugins(d)):
                out.append(pytest.param(plugin["configuration"]["value"], id=f"{p.name}#{i}.{n}"))
        elif k == "wasmplugin":
            out.append(pytest.param(json.dumps(d["spec"]["pluginConfig"]), id=f"{p.name}#{i}"))
    return out


# ------------------------------------------------------------------------------------------------
def test_there_are_bundled_configs():
    kinds = {kind_of(d) for _, _, d in DOCS}
    assert {"bootstrap", "compose", "wasmplugin"} <= kinds
    names = {p.name for p in YAMLS}
    assert {"envoy-local.yaml", "envoy-tls.yaml", "envoy-docker.yaml", "docker-compose.yaml",
            "istio-wasmplugin.yaml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_every_yaml_has_a_known_kind(path):
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for d in docs:
        assert kind_of(d) != "unknown", (
            f"{path}: unknown YAML kind; extend tests/test_bundled_configs.py to check it")


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_bootstrap_validates_without_filter(path, boot, tmp_path):
    res = validate(map_paths(boot, None, ensure_certs()), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK" in res.stdout + res.stderr


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_bootstrap_validates_with_filter(path, boot, tmp_path, wasm_path):
    res = validate(map_paths(boot, wasm_path, ensure_certs()), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK" in res.stdout + res.stderr


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_bootstrap_wiring_follows_the_contract(path, boot):
    managers = hcms(boot)
    assert managers, "no HTTP connection manager"
    clusters = {c["name"] for c in boot["static_resources"].get("clusters", [])}
    for hcm in managers:
        assert hcm.get("@type") == HCM_TYPE
        assert hcm.get("normalize_path") is True and hcm.get("merge_slashes") is True
        assert hcm.get("path_with_escaped_slashes_action") in ("UNESCAPE_AND_REDIRECT",
                                                               "KEEP_UNCHANGED")
        assert hcm.get("use_remote_address") is True
        names = [f["name"] for f in hcm["http_filters"]]
        assert names.count(WASM_FILTER) == 1, names
        assert names[-1] == "envoy.filters.http.router"
        for d in walk(hcm.get("route_config", {})):
            if isinstance(d.get("cluster"), str):
                assert d["cluster"] in clusters
    for listener in boot["static_resources"]["listeners"]:
        assert listener.get("per_connection_buffer_limit_bytes", 0) >= 4 * 1024 * 1024
    for f in (f for h in managers for f in h["http_filters"] if f["name"] == WASM_FILTER):
        assert f["typed_config"]["@type"] == WASM_TYPE
    for plugin in wasm_plugins(boot):
        assert plugin["name"] == "llm_api_guard" and plugin["root_id"] == "llm_api_guard"
        assert plugin.get("fail_open", False) is False
        assert plugin.get("failure_policy", "FAIL_CLOSED") == "FAIL_CLOSED"
        # Without it Envoy turns the filter's StopIteration into StopAll: bodies hang.
        assert plugin.get("allow_on_headers_stop_iteration") is True
        vm = plugin["vm_config"]
        assert vm["vm_id"] == "llm_api_guard"
        assert vm["runtime"] == "envoy.wasm.runtime.v8"
        assert vm["code"]["local"]["filename"].endswith("llm_api_guard.wasm")
        assert PEPPER_ENV in vm["environment_variables"]["host_env_keys"]
        cfg = json.loads(plugin["configuration"]["value"])
        missing = cluster_refs(cfg) - clusters
        assert not missing, f"the filter config names clusters the bootstrap lacks: {missing}"


HCM_KEYS_SHARED_WITH_HARNESS = (
    "use_remote_address", "normalize_path", "merge_slashes", "path_with_escaped_slashes_action",
    "generate_request_id", "always_set_request_id_in_response", "server_header_transformation", "max_request_headers_kb",
    "common_http_protocol_options", "codec_type", "stat_prefix")


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_bootstrap_matches_the_test_harness(path, boot):
    """The tests run against tests/harness.py's bootstrap: keep the shipped ones equivalent."""
    ref = build_bootstrap(clusters={"upstream": ("127.0.0.1", 1)}, http_filters=[])
    ref_hcm = hcms(ref)[0]
    for hcm in hcms(boot):
        for key in HCM_KEYS_SHARED_WITH_HARNESS:
            assert hcm.get(key) == ref_hcm.get(key), f"{key}: {hcm.get(key)!r} in {path.name}, " \
                f"{ref_hcm.get(key)!r} in tests/harness.py"
        assert hcm["http_filters"][-1] == ref_hcm["http_filters"][-1]  # router options
    assert boot.get("overload_manager") == ref["overload_manager"]


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_bootstrap_tls_is_13_only(path, boot):
    for d in walk(boot):
        if d.get("@type") == TLS_TYPE:
            params = d["common_tls_context"]["tls_params"]
            assert params["tls_minimum_protocol_version"] == "TLSv1_3"
            if d.get("require_client_certificate"):
                assert d["common_tls_context"]["validation_context"]["trusted_ca"]["filename"]
    if path.name == "envoy-tls.yaml":
        assert any(d.get("@type") == TLS_TYPE and d.get("require_client_certificate") is True
                   for d in walk(boot))


@pytest.mark.parametrize("path,boot", [b for b in BOOTSTRAPS if "docker" not in b.id])
def test_local_bootstrap_paths_are_build_or_gen_certs_outputs(path, boot):
    """Relative paths are relative to the repo root (where `make run` starts Envoy)."""
    for fn in filenames(boot):
        if fn.endswith(".wasm"):
            assert fn == "dist/llm_api_guard.wasm"
        else:
            assert fn.startswith("run/certs/") and fn.endswith(CERT_SUFFIXES), fn
    for d in walk(boot):
        if "socket_address" in d and "address" in d["socket_address"]:
            assert d["socket_address"]["address"] == "127.0.0.1", d


@pytest.mark.parametrize("value", filter_configs())
def test_filter_config_is_a_json_object_in_a_string_value(value):
    cfg = json.loads(value)
    assert isinstance(cfg, dict) and cfg
    assert set(cfg) <= SECTIONS, f"unknown top-level sections {set(cfg) - SECTIONS}"


@pytest.mark.parametrize("path,boot", BOOTSTRAPS)
def test_configuration_is_a_string_value(path, boot):
    plugins = wasm_plugins(boot)
    assert plugins
    for plugin in plugins:
        assert plugin["configuration"]["@type"] == STRING_VALUE
        assert isinstance(plugin["configuration"]["value"], str)


@pytest.mark.parametrize("value", filter_configs())
def test_filter_config_passes_config_check(value, cli_path, tmp_path):
    f = tmp_path / "filter.json"
    f.write_text(value)
    env = dict(os.environ)
    env[PEPPER_ENV] = TEST_PEPPER
    res = subprocess.run([str(cli_path), "config", "check", str(f)], capture_output=True,
                         text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------------
def _env_entries(environment) -> dict[str, str | None]:
    if isinstance(environment, dict):
        return {k: (None if v is None else str(v)) for k, v in environment.items()}
    out: dict[str, str | None] = {}
    for e in environment or []:
        k, sep, v = str(e).partition("=")
        out[k] = v if sep else None
    return out


def _bind_mounts(service: dict, base: Path) -> dict[str, Path]:
    """container path -> host path of every bind mount (short syntax "src:dst[:mode]")."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            src, dst = v.get("source"), v.get("target")
        else:
            parts = str(v).split(":")
            src, dst = parts[0], parts[1]
        if src and (src.startswith(".") or src.startswith("/")):
            out[dst] = (base / src).resolve()
    return out


def _envoy_service(doc: dict) -> tuple[str, dict]:
    found = [(n, s) for n, s in doc["services"].items()
             if str(s.get("image", "")).startswith("envoyproxy/envoy")]
    assert len(found) == 1, "expected exactly one envoyproxy/envoy service"
    return found[0]


@pytest.mark.parametrize("path,doc", COMPOSES)
def test_compose_envoy_service(path, doc):
    name, svc = _envoy_service(doc)
    assert re.fullmatch(r"envoyproxy/envoy:v1\.40(\.\d+|-latest)", svc["image"]), svc["image"]
    env = _env_entries(svc.get("environment"))
    assert PEPPER_ENV in env, "the pepper must be passed through from the environment"
    assert env[PEPPER_ENV] is None or env[PEPPER_ENV].startswith("${" + PEPPER_ENV), \
        "the pepper must come from the host environment, not be written in the file"
    for p in svc.get("ports", []):
        assert str(p).startswith("127.0.0.1:"), f"port {p} must be published on loopback only"

    cmd = svc.get("command", [])
    cmd = cmd.split() if isinstance(cmd, str) else list(cmd)
    cfg_in_container = cmd[cmd.index("-c") + 1] if "-c" in cmd else "/etc/envoy/envoy.yaml"
    mounts = _bind_mounts(svc, path.parent)
    assert cfg_in_container in mounts, f"{cfg_in_container} is not mounted"
    host_cfg = mounts[cfg_in_container]
    assert host_cfg in {p.resolve() for p, *_ in (b.values for b in BOOTSTRAPS)}, \
        f"{host_cfg} is not one of the validated bootstraps"

    boot = load_docs(host_cfg)[0]
    for fn in filenames(boot):
        assert any(fn == dst or fn.startswith(dst.rstrip("/") + "/") for dst in mounts), \
            f"{fn} (named in {host_cfg.name}) is not mounted into the {name} container"
    for src in mounts.values():
        rel = src.relative_to(REPO) if src.is_relative_to(REPO) else src
        generated = str(rel).startswith(("dist/", "run/"))
        assert generated or src.exists(), f"mount source {src} does not exist"
    assert "fail_open: true" not in host_cfg.read_text()

    services = set(doc["services"])
    for d in walk(boot.get("static_resources", {}).get("clusters", [])):
        if "socket_address" in d:
            assert d["socket_address"]["address"] in services, d


@pytest.mark.parametrize("path,doc", COMPOSES)
def test_compose_mock_upstream_service(path, doc):
    mocks = [s for s in doc["services"].values()
             if "mock_upstream.py" in " ".join(map(str, s.get("command", [])))]
    assert len(mocks) == 1
    svc = mocks[0]
    assert str(svc["image"]).startswith("python:3.11")
    mounts = _bind_mounts(svc, path.parent)
    assert any((src / "mock_upstream.py").is_file() for src in mounts.values())


@pytest.mark.parametrize("path,doc", WASMPLUGINS)
def test_istio_wasmplugin(path, doc):
    assert doc["apiVersion"] == "extensions.istio.io/v1alpha1"
    spec = doc["spec"]
    assert re.match(r"(oci|file)://", spec["url"]), spec["url"]
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec.get("pluginName", "llm_api_guard") == "llm_api_guard"
    env = {e["name"]: e for e in spec["vmConfig"]["env"]}
    assert env[PEPPER_ENV].get("valueFrom") == "HOST" and "value" not in env[PEPPER_ENV]
    assert isinstance(spec["pluginConfig"], dict) and set(spec["pluginConfig"]) <= SECTIONS
