#!/usr/bin/env bash
# profiler-daemon/systemd/sprofd.service without booting systemd (it is not PID 1 here):
# `systemd-analyze verify` on a copy whose ExecStart is the built binary, the exposure score of
# `systemd-analyze security --offline=true` (at most 2.5), and the directives
# /work/shared/reference/systemd.md lists as traps, which pass verify and score well but kill or
# blind a profiler at run time. Then `make install` / `make uninstall` into a staging root.
# Run by `make test` (through `make package-test`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
UNIT=profiler-daemon/systemd/sprofd.service
SPROFD=$ROOT/target/release/sprofd
MAX_EXPOSURE=2.5
passed=0
fail() { echo "unit-test: FAILED: $*" >&2; exit 1; }
ok() { echo "unit-test: ok: $*"; passed=$((passed + 1)); }
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing (apt-get install systemd)"
[[ -x $SPROFD ]] || fail "$SPROFD missing (make build)"

tmp=$(mktemp -d /tmp/sprofd-unit-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Documentation=man:sprofd(1) is checked by verify: give it the man page through MANPATH.
mkdir -p "$tmp/man/man1"
"$SPROFD" manpage >"$tmp/man/man1/sprofd.1"

# verify_unit FILE: systemd-analyze verify must exit 0 and print nothing (it prints unknown or
# misspelt directives as warnings and still exits 0).
verify_unit() {
	local out
	out=$(MANPATH=$tmp/man systemd-analyze verify "$1" 2>&1) || fail "systemd-analyze verify $1: $out"
	[[ -z $out ]] || fail "systemd-analyze verify $1 warns: $out"
}

mkdir "$tmp/unit"
sed "s|^ExecStart=/usr/bin/sprofd |ExecStart=$SPROFD |" "$UNIT" >"$tmp/unit/sprofd.service"
grep -q "^ExecStart=$SPROFD daemon --config /etc/sprofd/sprofd.toml$" "$tmp/unit/sprofd.service" \
	|| fail "ExecStart is not /usr/bin/sprofd daemon --config /etc/sprofd/sprofd.toml"
verify_unit "$tmp/unit/sprofd.service"
ok "systemd-analyze verify (ExecStart=$SPROFD): no output, exit 0"

security=$(systemd-analyze security --offline=true --no-pager "$tmp/unit/sprofd.service" 2>&1) \
	|| fail "systemd-analyze security --offline=true: $security"
score=$(sed -n 's/.*Overall exposure level for sprofd\.service: \([0-9.]*\) .*/\1/p' <<<"$security")
[[ -n $score ]] || fail "no overall exposure level in: $security"
awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s <= max) }' \
	|| fail "exposure $score > $MAX_EXPOSURE: $(grep '✗' <<<"$security")"
ok "systemd-analyze security --offline=true: overall exposure $score (<= $MAX_EXPOSURE)"

# The settings the brief fixes, and the traps: each line is "regex<TAB>why", must match.
while IFS=$'\t' read -r want why; do
	grep -qE "^$want\$" "$UNIT" || fail "$UNIT lacks /$want/: $why"
done <<'EOF'
Type=notify	the daemon sends READY=1, STATUS=, WATCHDOG=1, STOPPING=1
ExecReload=/bin/kill -HUP \$MAINPID	systemctl reload re-reads the config
Restart=on-failure	restarted after a crash or a watchdog kill
WatchdogSec=30	a hung sampling loop gets the daemon restarted
DynamicUser=yes	no system user to create
StateDirectory=sprofd	$STATE_DIRECTORY = /var/lib/sprofd
UMask=0077	stored profiles readable by the daemon only
AmbientCapabilities=CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHECKPOINT_RESTORE CAP_SYSLOG	exactly the five capabilities
CapabilityBoundingSet=CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHECKPOINT_RESTORE CAP_SYSLOG	exactly the five capabilities
SystemCallFilter=@system-service perf_event_open	perf_event_open is only in @debug: without it SIGSYS at the first event
ProtectHome=read-only	binaries under /home must stay readable for symbols
MemoryMax=[0-9]+[KMG]	bounded memory
NoNewPrivileges=yes	hardening
ProtectSystem=strict	hardening
EOF
# Lines that must not be there.
while IFS=$'\t' read -r bad why; do
	if grep -nE "^$bad" "$UNIT" >&2; then fail "$UNIT has /$bad/ (line above): $why"; fi
done <<'EOF'
ProtectProc=(invisible|noaccess|ptraceable)	other users' /proc/PID disappear
ProcSubset=pid	hides /proc/kallsyms and /proc/sys/kernel/perf_event_*
PrivateUsers=(yes|true|1|on)	capabilities would count only in a user namespace
ProtectHome=(yes|true|1|on|tmpfs)	binaries under /home unreadable
PrivateNetwork=(yes|true|1|on)	no loopback listener
PrivatePIDs=	no host pids
SystemCallFilter=~.*@(debug|resources)	denies perf_event_open (@debug) or setrlimit (@resources) again
RestrictAddressFamilies=.*none	no sockets at all
EOF
# One line each: a second AmbientCapabilities=/CapabilityBoundingSet= line would add to the set.
for key in AmbientCapabilities CapabilityBoundingSet; do
	n=$(grep -c "^$key=" "$UNIT")
	[[ $n == 1 ]] || fail "$key= appears $n times (each line adds to the set)"
done
ok "the fixed settings are there; none of the directives that break a profiler"

# make install / make uninstall into a staging root (DESTDIR), as a packager would.
stage=$tmp/stage
make -s --no-print-directory install DESTDIR="$stage" PREFIX=/usr/local >/dev/null
[[ -x $stage/usr/local/bin/sprofd ]] || fail "make install: no $stage/usr/local/bin/sprofd"
installed_unit=$stage/usr/local/lib/systemd/system/sprofd.service
grep -q '^ExecStart=/usr/local/bin/sprofd daemon --config /etc/sprofd/sprofd.toml$' "$installed_unit" \
	|| fail "make install: the unit's ExecStart: $(grep ExecStart= "$installed_unit")"
cmp -s "$stage/etc/sprofd/sprofd.toml" profiler-daemon/systemd/sprofd.toml || fail "make install: no commented config"
[[ $(stat -c %a "$installed_unit") == 644 && $(stat -c %a "$stage/etc/sprofd/sprofd.toml") == 644 ]] \
	|| fail "make install: modes $(stat -c '%n %a' "$installed_unit" "$stage/etc/sprofd/sprofd.toml")"
echo 'frequency = 49' >>"$stage/etc/sprofd/sprofd.toml"
make -s --no-print-directory install DESTDIR="$stage" PREFIX=/usr/local >/dev/null
grep -q '^frequency = 49$' "$stage/etc/sprofd/sprofd.toml" || fail "make install overwrote an existing config"
make -s --no-print-directory uninstall DESTDIR="$stage" PREFIX=/usr/local >/dev/null
[[ ! -e $stage/usr/local/bin/sprofd && ! -e $installed_unit ]] || fail "make uninstall left the binary or the unit"
[[ -f $stage/etc/sprofd/sprofd.toml ]] || fail "make uninstall removed a changed config"
ok "make install DESTDIR= PREFIX=/usr/local: binary, unit (ExecStart=/usr/local/bin/sprofd), config; keeps a changed config; make uninstall"

# The unit as make install writes it, with its binary where ExecStart says.
prefix=$tmp/prefix
make -s --no-print-directory install PREFIX="$prefix" SYSCONFDIR="$prefix/etc" >/dev/null
grep -q "^ExecStart=$prefix/bin/sprofd daemon --config $prefix/etc/sprofd/sprofd.toml$" "$prefix/lib/systemd/system/sprofd.service" \
	|| fail "make install PREFIX=$prefix: $(grep ExecStart= "$prefix/lib/systemd/system/sprofd.service")"
verify_unit "$prefix/lib/systemd/system/sprofd.service"
make -s --no-print-directory uninstall PREFIX="$prefix" SYSCONFDIR="$prefix/etc" >/dev/null
[[ -z $(find "$prefix" -type f) ]] || fail "make uninstall left: $(find "$prefix" -type f)"
ok "make install PREFIX=$prefix: systemd-analyze verify passes on the installed unit; make uninstall removes all (unchanged config too)"
echo "unit-test: $passed passed, 0 failed"
