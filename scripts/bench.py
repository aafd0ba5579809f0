#!/usr/bin/env python3
"""`make bench`: Envoy with the filter against the same Envoy without it, in the same run.

Setup: one Envoy worker (`--concurrency 1`) pinned to CPU 0, wrk pinned to CPU 1, routes answered
by Envoy's `direct_response`, so what is measured is Envoy plus the filter, not an upstream.
Each run lasts a fixed time with a fixed number of connections (bounded load, loopback only). POST baselines use Envoy's native buffer filter, so both sides read the whole body.

Printed per scenario: requests/s and latency p50/p99 of the median run, the ratio of requests/s
to the baseline, Envoy's CPU time per request (user + system time of the Envoy process over the
run, from /proc, divided by the requests served) and the CPU time the filter adds per request
compared with the baseline of the same round (medians over rounds).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from harness import TEST_PEPPER, Gateway, filter_config  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "3s")  # per measured run (wrk -d)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))  # alternating rounds; medians are reported
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
CLI = ROOT / "dist" / "llm-api-guard"


def direct_response(boot: dict, buffer_baseline: bool = False) -> None:
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}}}]
    if buffer_baseline:
        hcm["http_filters"].insert(0, {
            "name": "envoy.filters.http.buffer",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                             "max_request_bytes": 1048576}})


def wrk(url: str, method: str = "GET", headers: dict | None = None, body_size: int = 0,
        duration: str = DURATION) -> dict:
    lines = [f'wrk.method = "{method}"']
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if body_size:
        lines.append(f'wrk.body = string.rep("a", {body_size})')
        lines.append('wrk.headers["content-type"] = "application/json"')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    try:
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}",
                              "--latency", "-s", script, url],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"benchmark requests failed ({non2xx.group(1)} non-2xx):\n{out}")

    def pct(p: str) -> str:
        m = re.search(rf"\s{p}%\s+([\d.]+\w+)", out)
        return m.group(1) if m else "?"
    return {"rps": rps, "requests": total, "p50": pct("50"), "p99": pct("99")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(gw: Gateway, method: str, headers: dict, body: int) -> dict:
    """One wrk run plus Envoy's CPU time per request over it."""
    before = cpu_seconds(gw.proc.pid)
    r = wrk(gw.url + "/v1/models", method, headers, body)
    r["cpu_us"] = (cpu_seconds(gw.proc.pid) - before) / max(r["requests"], 1) * 1e6
    return r


def start(cfg: dict | None, buffer_baseline: bool = False) -> Gateway:
    gw = Gateway.start(cfg, wasm=cfg is not None, concurrency=1, log_level="warning",
                       component_log_level="wasm:warning",
                       bootstrap_hook=lambda b: direct_response(b, buffer_baseline))
    subprocess.run(["taskset", "-a", "-p", "-c", "0", str(gw.proc.pid)], check=True, capture_output=True)
    return gw


def new_key(keyset: Path) -> str:
    env = dict(os.environ, LLM_API_GUARD_PEPPER=TEST_PEPPER)
    return subprocess.run([str(CLI), "keys", "new", "--user", "bench", "--keyset", str(keyset)],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()


def jwt_material() -> tuple[dict, str]:
    import base64

    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.public_key().public_numbers()

    def b64(i: int) -> str:
        return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(n.n), "e": b64(n.e)}]}
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    now = int(time.time())
    token = pyjwt.encode({"iss": "https://issuer.bench", "aud": "bench", "sub": "bench-user",
                          "iat": now, "exp": now + 3600}, pem, algorithm="RS256", headers={"kid": "k1"})
    return jwks, token


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="llm-api-guard-bench-"))
    key = new_key(tmp / "keyset.json")
    records = json.loads((tmp / "keyset.json").read_text())["keys"]
    jwks, token = jwt_material()
    limits_only = filter_config(gateway_hardening={"enabled": True})
    api_key = filter_config(
        api_key_management={"enabled": True, "keys": records},
        authentication={"enabled": True, "methods": {"jwt": {"enabled": False}, "mtls": {"enabled": False},
                                                      "api_key": {"enabled": True}}},
        gateway_hardening={"enabled": True})
    jwt_cfg = filter_config(
        authentication={"enabled": True, "methods": {
            "jwt": {"enabled": True, "issuer": "https://issuer.bench", "audience": "bench", "jwks": jwks},
            "mtls": {"enabled": False}, "api_key": {"enabled": False}}},
        gateway_hardening={"enabled": True})
    key_h = {"X-API-Key": key}
    jwt_h = {"Authorization": f"Bearer {token}"}

    # Groups: the first scenario of each is its baseline. All gateways of a group run at once
    # (idle when not loaded) and are measured in alternation, round after round, so that slow
    # phases of the VM hit baseline and filter alike; each round's figures are compared with the
    # same round's baseline and the median over rounds is reported.
    groups = [[
        # name, config, buffer baseline, method, headers, body
        ("GET  no filter (baseline)", None, False, "GET", {}, 0),
        ("GET  filter: size limits only", limits_only, False, "GET", {}, 0),
        ("GET  filter: API key", api_key, False, "GET", key_h, 0),
        ("GET  filter: JWT RS256 (cached)", jwt_cfg, False, "GET", jwt_h, 0),
    ]]
    for size in (1024, 65536, 524288):
        label = f"{size // 1024} KiB"
        groups.append([
            (f"POST {label} Envoy buffer filter (baseline)", None, True, "POST", {}, size),
            (f"POST {label} filter: limits + API key", api_key, False, "POST", key_h, size)])
    only = os.environ.get("BENCH_ONLY")  # a regex over scenario names (baselines always run)
    if only:
        groups = [[g[0]] + [s for s in g[1:] if re.search(only, s[0])] for g in groups]
        groups = [g for g in groups if len(g) > 1]

    print(f"wrk: 1 thread on CPU 1, {CONNECTIONS} connections, runs of {DURATION}; Envoy: 1 worker on "
          f"CPU 0; direct_response routes; median over {ROUNDS} alternating rounds\n")
    print(f"{'scenario':<44} {'req/s':>9} {'p50':>9} {'p99':>9} {'ratio':>7} {'CPU us/req':>10} {'added':>8}")
    median = statistics.median
    results = []
    for group in groups:
        gateways = []
        try:
            for _, cfg, buffered, method, headers, body in group:
                gw = start(cfg, buffered)
                gateways.append(gw)
                wrk(gw.url + "/v1/models", method, headers, body, "2s")  # warm-up (V8 tier-up)
            rounds = [[measure(gw, s[3], s[4], s[5]) for gw, s in zip(gateways, group)]
                      for _ in range(ROUNDS)]
        finally:
            for gw in gateways:
                gw.stop()
        for i, (name, cfg, *_rest) in enumerate(group):
            runs = [rnd[i] for rnd in rounds]
            ratio = median(rnd[i]["rps"] / rnd[0]["rps"] for rnd in rounds)
            added = median(rnd[i]["cpu_us"] - rnd[0]["cpu_us"] for rnd in rounds)
            typical = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            cpu = median(r["cpu_us"] for r in runs)
            results.append({"scenario": name, "rps": typical["rps"], "p50": typical["p50"],
                            "p99": typical["p99"], "ratio": round(ratio, 3), "cpu_us": round(cpu, 1),
                            "added_cpu_us": round(added, 1) if cfg is not None else None})
            print(f"{name:<44} {typical['rps']:>9.0f} {typical['p50']:>9} {typical['p99']:>9} {ratio:>7.2f} "
                  f"{cpu:>10.1f} {(f'{added:+.1f}' if cfg is not None else '-'):>8}", flush=True)
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target" / "bench.json").write_text(json.dumps(results, indent=2))
    print("\nresults also in target/bench.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
