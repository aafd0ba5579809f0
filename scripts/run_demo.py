#!/usr/bin/env python3
"""`make run`: Envoy with the filter (envoy/envoy-local.yaml) in front of the mock
OpenAI-compatible upstream, with demo credentials made fresh on every start.

Everything lives in run/ (git-ignored): the pepper and the JWT signing key in run/ itself, and in
run/public/ what the mock serves: the keyset the CLI writes (/keyset.json, refreshed by the filter
every 5 s) and the JWKS (/.well-known/jwks.json). Ctrl-C stops both processes.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "run"
PUBLIC = RUN / "public"  # what the mock upstream serves; secrets stay in run/ itself
ENVOY = ROOT / ".venv" / "bin" / "envoy"
CLI = ROOT / "dist" / "llm-api-guard"
LISTENER = "http://127.0.0.1:10000"
ADMIN = "http://127.0.0.1:9901"
UPSTREAM_PORT = 18000
ISSUER = "https://issuer.demo.local"
AUDIENCE = "llm-api-guard-demo"


def b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt_material() -> str:
    """Writes run/public/jwks.json and returns a demo RS256 token valid for 24 hours."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": "demo-1", "use": "sig", "alg": "RS256",
                      "n": b64url_uint(pub.n), "e": b64url_uint(pub.e)}]}
    (PUBLIC / "jwks.json").write_text(json.dumps(jwks, indent=2))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (RUN / "jwt-signing-key.pem").write_bytes(pem)
    os.chmod(RUN / "jwt-signing-key.pem", 0o600)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-jwt-user", "iat": now, "nbf": now,
              "exp": now + 24 * 3600}
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": "demo-1"})


def wait_ready(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"envoy exited with status {proc.returncode}; see run/envoy.log")
        try:
            with urllib.request.urlopen(ADMIN + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("envoy did not become ready within 30 s; see run/envoy.log")


def main() -> int:
    PUBLIC.mkdir(parents=True, exist_ok=True)
    pepper_file = RUN / "pepper"
    if not pepper_file.exists():
        pepper_file.write_text(secrets.token_urlsafe(32))
        os.chmod(pepper_file, 0o600)
    env = dict(os.environ, LLM_API_GUARD_PEPPER=pepper_file.read_text().strip())

    keyset = PUBLIC / "keyset.json"
    keyset.unlink(missing_ok=True)
    api_key = subprocess.run([str(CLI), "keys", "new", "--user", "demo-user", "--keyset", str(keyset)],
                             env=env, check=True, capture_output=True, text=True).stdout.strip()
    token = make_jwt_material()

    procs: list[subprocess.Popen] = []

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "mock_upstream.py"), "--port", str(UPSTREAM_PORT),
             "--document", f"/keyset.json={keyset}", "--document", f"/.well-known/jwks.json={PUBLIC / 'jwks.json'}"],
            cwd=ROOT))
        log = open(RUN / "envoy.log", "w")
        procs.append(subprocess.Popen(
            [str(ENVOY), "-c", "envoy/envoy-local.yaml", "--concurrency", "2", "--disable-hot-restart",
             "--log-level", "info"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_ready(procs[1])
        print(f"""
llm-api-guard demo is running (Ctrl-C to stop)

  gateway        {LISTENER}          (Envoy + filter, config in envoy/envoy-local.yaml)
  envoy admin    {ADMIN}           (/stats?filter=llm_api_guard, /stats/prometheus)
  mock upstream  http://127.0.0.1:{UPSTREAM_PORT}          (OpenAI-compatible; serves /keyset.json and the JWKS)
  envoy log      run/envoy.log

demo API key (user demo-user, 24 h; keyset run/public/keyset.json):
  {api_key}
demo JWT (RS256, iss {ISSUER}, aud {AUDIENCE}, sub demo-jwt-user, 24 h):
  {token}

try:
  curl -s {LISTENER}/v1/chat/completions -H 'X-API-Key: {api_key}' \\
       -H 'content-type: application/json' -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -s {LISTENER}/v1/models -H 'Authorization: Bearer {token}'
  curl -s {LISTENER}/v1/models                      # 401: no credential
  curl -s {LISTENER}/healthz                        # health check, exempt from authentication
  LLM_API_GUARD_PEPPER=$(cat run/pepper) dist/llm-api-guard keys revoke --id {api_key[4:16]} \\
       --reason user_request --keyset run/public/keyset.json   # refused within 5 s, no restart
""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping (see run/envoy.log)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
