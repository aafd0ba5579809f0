"""Shared pytest fixtures for the tests against a real Envoy (see tests/harness.py).

Fixtures:

- ``gateway_factory(filter_config=None, **kw)``: ``Gateway.start`` with the same arguments;
  every gateway it made is stopped at teardown, and for a failed test the tail of each
  gateway's Envoy log is printed (pytest shows it under "Captured stdout teardown").
  With ``wasm=True`` (the default) and no ``dist/llm_api_guard.wasm`` the test is skipped
  ("run make build"), or fails when ``CI`` is set (CI always builds first).
- ``module_gateway_factory``: the same, stopped at the end of the module (log tails printed
  if any test of the module failed).
- ``wasm_path``: the filter .wasm (same skip / fail rule).
- ``cli_path``: ``dist/llm-api-guard`` (same skip / fail rule).
- ``mock_upstream``: a started MockUpstream, stopped at teardown (pass it as
  ``gateway_factory(upstream=mock_upstream)`` to share it between gateways).
- ``certs``: the directory with the certificates of scripts/gen_certs.sh.
- ``make_filter_config``: ``harness.filter_config`` (every section off, overrides deep-merged).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import CLI_PATH, WASM_PATH, Gateway, MockUpstream, WasmMissing  # noqa: E402


def _missing(what: str) -> None:
    msg = f"{what} not found: run `make build` first"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(msg)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def wasm_path() -> Path:
    if not WASM_PATH.is_file():
        _missing(str(WASM_PATH))
    return WASM_PATH


@pytest.fixture(scope="session")
def cli_path() -> Path:
    if not CLI_PATH.is_file():
        _missing(str(CLI_PATH))
    return CLI_PATH


@pytest.fixture(scope="session")
def certs() -> Path:
    return harness.ensure_certs()


@pytest.fixture
def mock_upstream():
    up = MockUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def make_filter_config():
    return harness.filter_config


def _make_factory(request, failed):
    made: list[Gateway] = []

    def start(filter_config=None, **kw):
        try:
            result = Gateway.start(filter_config, **kw)
        except WasmMissing as e:
            _missing(str(e).split(" does not exist")[0])
        if isinstance(result, Gateway):
            made.append(result)
        return result

    def finish():
        show = failed()
        for gw in made:
            if show:
                print(f"\n===== Envoy log tail of {gw.url} "
                      f"(keep_dir=True keeps {gw.run_dir}) =====")
                print(gw.log_tail(80))
            gw.stop()

    return start, finish


@pytest.fixture
def gateway_factory(request):
    start, finish = _make_factory(request, lambda: _failed(request))
    yield start
    finish()


@pytest.fixture(scope="module")
def module_gateway_factory(request):
    """Like gateway_factory, but the gateways live until the end of the module (Envoy with the
    filter takes 1-2 s to start: share one gateway between the tests that only read)."""
    failed_before = request.session.testsfailed
    start, finish = _make_factory(request, lambda: request.session.testsfailed > failed_before)
    yield start
    finish()
