# sprofd — the two set-up commands are `make demo` and `make test` (see README.md).

CARGO ?= cargo
SPROFD := target/release/sprofd
CC ?= cc

# `make fuzz`: the readers of untrusted input (ELF/DWARF, perf maps, jitdumps, pprof and
# stored windows, HTTP queries) against SPROFD_FUZZ_ITERS mutated inputs each (make test
# runs a few thousand; failures are saved under target/fuzz-failures/).
FUZZ_ITERS ?= 200000

.PHONY: fuzz all build demo test lint fmt bench install uninstall clean wheel deb package-test man completions \
	deps deps-check deps-test deps-package deps-wheel deps-deb deps-lint deps-bench

# `make install` / `make uninstall` locations; DESTDIR stages into a root for packaging.
# /usr/local/lib/systemd/system is on systemd's unit search path (systemd-analyze unit-paths).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
UNIT := profiler-daemon/systemd/sprofd.service
CONF := profiler-daemon/systemd/sprofd.toml

all: build

build:
	$(CARGO) build --release -p sprofd

# Profiles the bundled demo workload under `sprofd record` and writes demo/flamegraph.svg.
demo: build
	mkdir -p demo/bin
	$(CC) -O2 -g -fomit-frame-pointer -pthread -o demo/bin/workload demo/workload.c
	$(SPROFD) record -F 999 -o demo/flamegraph.svg -o demo/profile.folded -- demo/bin/workload 3
	@echo "open demo/flamegraph.svg in a browser (search with Ctrl-F, click to zoom)"

# The set-up step: the Debian packages, pip packages, cargo tools, CPython builds and the Debian
# unstable root that the tests, packaging and benchmarks need, all listed in tests/deps.sh
# (`bash tests/deps.sh --list`; docs/install.md). Installs only what is missing and prints a
# line for each; silent when everything is there. Without root or network it names what it
# could not install and the tests needing it skip (SPROFD_REQUIRE_LIVE=1: it fails instead).
# `make demo` needs none of it.
DEPS := bash tests/deps.sh
deps:
	@$(DEPS)
deps-test:
	@$(DEPS) test package
deps-package:
	@$(DEPS) package
deps-wheel:
	@$(DEPS) wheel
deps-deb:
	@$(DEPS) deb
deps-lint:
	@$(DEPS) lint
deps-bench:
	@$(DEPS) bench
# Fails when a test or script runs a command that tests/deps.sh does not list (no cargo: cheap).
deps-check:
	@$(DEPS) --check-coverage

# Everything CI checks: formatting, lints, unit tests and live end-to-end tests.
# Set SPROFD_REQUIRE_LIVE=1 to turn skipped live tests (no root / no perf) into failures.
test: deps-test deps-check build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	SPROFD_BIN=$(CURDIR)/$(SPROFD) $(CARGO) test --release --workspace
	$(MAKE) --no-print-directory package-test

# The wheel (maturin, bindings = "bin"): target/wheels/sprofd-*.whl.
wheel: deps-wheel
	python3 -m maturin build --release -o target/wheels

# The Debian package (cargo-deb, [package.metadata.deb] in profiler-daemon/Cargo.toml):
# target/debian/sprofd_<version>-1_<arch>.deb, the binary stripped as Debian policy asks
# (`cargo deb --dbgsym` would put the debug info in a separate package).
deb: deps-deb build man completions
	$(CARGO) deb -p sprofd --no-build --strip

# Build the wheel, install it into a fresh venv and profile a Python script with it; run the
# magics (%sprofd in IPython and in a notebook executed by nbclient, as root and unprivileged); build
# the .deb and check its contents, lintian, man page and completions; check the systemd unit
# with systemd-analyze verify and security.
package-test: deps-package build
	bash tests/package/wheel.sh
	bash tests/package/magics.sh
	bash tests/package/deb.sh
	bash tests/package/unit.sh

# The man page and shell completions, generated from the CLI definition.
man: build
	mkdir -p target/man && $(SPROFD) manpage > target/man/sprofd.1

completions: build
	mkdir -p target/completions
	for sh in bash zsh fish; do $(SPROFD) completions $$sh > target/completions/sprofd.$$sh; done

fuzz:
	SPROFD_FUZZ_ITERS=$(FUZZ_ITERS) $(CARGO) test --release -p sprof-core -p sprof-symbolizer \
		-p flamegraph-out -p sprofd -- mutated

lint: deps-lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt: deps-lint
	$(CARGO) fmt --all

# Overhead, CPU per sample, completeness against perf; Python against py-spy and austin, and
# 3.15 against CPython's own Tachyon;
# off-CPU modes on a context-switch storm; symbolization speed against perf report and samply
# (py-spy, austin, samply and inferno come from tests/deps.sh; SAMPLY_PARANOID=1 make bench lets it
# lower kernel.perf_event_paranoid to 1 for samply record, which needs it on a VM without a PMU).
# Writes docs/benchmarks.md (run.sh last: it includes the other three sections).
bench: deps-bench build
	bash bench/python.sh
	SID=1 bash bench/python.sh
	bash bench/offcpu.sh
	bash bench/memory.sh
	bash bench/daemon.sh
	bash bench/busy.sh
	bash bench/symbolize.sh
	bash bench/run.sh

# The binary, the systemd unit (its ExecStart pointed at $(BINDIR)/sprofd) and the commented
# default config, which is never overwritten: an existing one is kept as it is.
install: build
	install -D -m 0755 $(SPROFD) $(DESTDIR)$(BINDIR)/sprofd
	install -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed -e 's|/usr/bin/sprofd|$(BINDIR)/sprofd|' -e 's|/etc/sprofd/|$(SYSCONFDIR)/sprofd/|' \
		$(UNIT) > $(DESTDIR)$(SYSTEMDUNITDIR)/sprofd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/sprofd.service
	if [ -e $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml ]; then \
		echo "kept the existing $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml"; \
	else \
		install -D -m 0644 $(CONF) $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml; \
	fi
	@echo "installed; under systemd: systemctl daemon-reload && systemctl enable --now sprofd"

# Removes what `make install` put there; the config only if it is still the shipped one.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sprofd $(DESTDIR)$(SYSTEMDUNITDIR)/sprofd.service
	if cmp -s $(CONF) $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml; \
		rmdir $(DESTDIR)$(SYSCONFDIR)/sprofd 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/sprofd/sprofd.toml: it was changed"; \
	fi

clean:
	$(CARGO) clean
	rm -rf demo/bin demo/flamegraph.svg demo/profile.folded
