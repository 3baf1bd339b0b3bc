# sprofd — the two set-up commands are `make demo` and `make test` (see README.md).

CARGO ?= cargo
SPROFD := target/release/sprofd
CC ?= cc

.PHONY: all build demo test lint fmt bench install clean wheel package-test man completions

all: build

build:
	$(CARGO) build --release -p sprofd

# Profiles the bundled demo workload under `sprofd record` and writes demo/flamegraph.svg.
demo: build
	mkdir -p demo/bin
	$(CC) -O2 -g -fomit-frame-pointer -pthread -o demo/bin/workload demo/workload.c
	$(SPROFD) record -F 999 -o demo/flamegraph.svg -o demo/profile.folded -- demo/bin/workload 3
	@echo "open demo/flamegraph.svg in a browser (search with Ctrl-F, click to zoom)"

# Everything CI checks: formatting, lints, unit tests and live end-to-end tests.
# Set SPROFD_REQUIRE_LIVE=1 to turn skipped live tests (no root / no perf) into failures.
test: build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	SPROFD_BIN=$(CURDIR)/$(SPROFD) $(CARGO) test --release --workspace
	$(MAKE) --no-print-directory package-test

# The wheel (maturin, bindings = "bin"): target/wheels/sprofd-*.whl.
wheel:
	python3 -m maturin build --release -o target/wheels

# Build the wheel, install it into a fresh venv and profile a Python script with it.
package-test: build
	bash tests/package/wheel.sh

# The man page and shell completions, generated from the CLI definition.
man: build
	mkdir -p target/man && $(SPROFD) manpage > target/man/sprofd.1

completions: build
	mkdir -p target/completions
	for sh in bash zsh fish; do $(SPROFD) completions $$sh > target/completions/sprofd.$$sh; done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Overhead, CPU per sample, completeness against perf; Python against py-spy and austin;
# off-CPU modes on a context-switch storm; symbolization speed against perf report and samply
# (symbolize.sh installs samply with cargo if it is missing; SAMPLY_PARANOID=1 make bench lets it
# lower kernel.perf_event_paranoid to 1 for samply record, which needs it on a VM without a PMU).
# Writes docs/benchmarks.md (run.sh last: it includes the other three sections).
bench: build
	python3 -m pip install -q py-spy austin-dist==3.7.0
	bash bench/python.sh
	bash bench/offcpu.sh
	bash bench/symbolize.sh
	bash bench/run.sh

install: build
	install -m 0755 $(SPROFD) /usr/local/bin/sprofd

clean:
	$(CARGO) clean
	rm -rf demo/bin demo/flamegraph.svg demo/profile.folded
