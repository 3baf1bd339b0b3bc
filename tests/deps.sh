#!/usr/bin/env bash
# sprofd's set-up step: every tool, interpreter and root file system that the tests, the packaging
# targets and the benchmarks need, in one list (MANIFEST below), and the installer for it.
#
#   bash tests/deps.sh [GROUP...]      install what GROUP needs (default: every group); what
#                                      `make deps`, `make test`, `make wheel`, `make deb`,
#                                      `make bench` and `make package-test` run first
#   bash tests/deps.sh --list [GROUP...]   print the list: kind, what, groups, why
#   bash tests/deps.sh --missing [GROUP...]  print what is missing, install nothing
#   bash tests/deps.sh --check-coverage    fail when a test, packaging or bench script runs a
#                                      command (or uses an interpreter or root) the list lacks
#
# Groups: test (cargo test's tests), package (tests/package/*.sh: the wheel, the .deb, the unit),
# wheel (make wheel), deb (make deb), lint (make lint/fmt), bench (make bench).
#
# Idempotent: silent and exit 0 when everything is there. Otherwise one line per thing it
# installs ("sprofd deps: installing ..."), the installers' own output in $SPROFD_DEPS_LOG
# (default /tmp/sprofd-deps.log). What cannot be installed (not root, no network, a failed
# build) is one line, "sprofd deps: cannot install X (why)"; the script goes on and exits 0 so
# that the tests needing X skip with their own SKIP line, except under SPROFD_REQUIRE_LIVE=1
# (CI), where it exits 1. docs/install.md lists the same items for installing by hand.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------------------------------------
# The manifest: one line per item.
#   KIND     base (never installed: the machine must have it), apt, pip, npm (npm install -g),
#            cargo (cargo install --locked), rustup (component), git (a pinned clone), pyenv (an
#            interpreter built by `pyenv install`), root (a debootstrapped root file system), venv
#            (a virtual environment of Debian's /usr/bin/python3 at the directory of PROVIDES'
#            first path, with the pinned pip requirements of NAME), mount (a kernel file system
#            NAME mounted at the directory of PROVIDES' first path)
#   NAME     what is installed: Debian package(s) (comma-separated), a pinned pip requirement,
#            crate@version, component, pyenv version, root name, pip requirements (venv)
#   PROVIDES comma-separated; all must be present for the item to count as installed:
#            a command on PATH, an absolute path ($PYENV_ROOT and $ROOT expanded), or py:MODULE (importable
#            by python3); a pinned pip/cargo item must also be at its version
#   GROUPS   comma-separated groups (above); @pyenv-build and @sid-build are pulled in only
#            when an interpreter or the root has to be built
#   WHY      the rest of the line
# ---------------------------------------------------------------------------------------------
MANIFEST=$(
	cat <<'EOF'
base  rust-toolchain   cargo,rustc,rustup                       all          the Rust toolchain (rustup.rs) builds sprofd; `make demo` needs only it and cc
base  cc,make          cc,make                                  all          C fixtures and the demo workload are compiled with cc; make runs every target
base  python3          python3                                  all          fixture workloads, the wheel's venv, the benchmarks' workloads
base  git              git                                      all          the build script stamps the commit into `sprofd --version`
base  debian-base      sh,bash,env,true,sleep,touch,cat,cp,mv,rm,mkdir,rmdir,ls,chmod,stat,mktemp,date,id,head,tail,sort,wc,tr,cut,paste,seq,nproc,dirname,pwd,uname,base64,numfmt,sha256sum,du,install,kill,nice,grep,sed,awk,find,diff,cmp,tar,gzip,mkfifo,truncate,timeout,chown,mount,chroot  all  what every Debian has (coreutils, dash, bash, grep, sed, mawk, findutils, diffutils, tar, gzip, mount)
apt   procps           pgrep                                    bench        the benchmarks find the profilers' processes
apt   g++              g++                                      test         the symbolizer's C++ fixture (demangled, inlined frames)
apt   binutils         objcopy,objdump,nm,readelf,strip,addr2line  test,package,bench  split and strip fixtures' debug info, check frame-pointer prologues and that the .deb's binary is stripped; addr2line is a baseline in the symbolization benchmark
apt   passwd           useradd                                  test,package         the hostile-file tests run attackers as a throwaway user they create
apt   util-linux       setpriv,unshare,nsenter,mountpoint,taskset  test,bench,package   drop to an unprivileged user, pid namespaces (containers), join a target's mount namespace (Tachyon), pin benchmark threads
apt   linux-perf       perf                                     test,bench   the reference profiler the completeness tests and benchmarks compare against
apt   xz-utils         xz                                       test,bench   a real stripped program profiled end to end
apt   lld              ld.lld                                   test         lld-linked fixtures: its packed load segments (sprof_core::Segments tests); rustup's rust-lld is the fallback
apt   gdb              gdb                                      test         an oracle for Python frames (merge_vs_gdb tests)
apt   nodejs           node                                     test         JIT frames from Node's perf map
apt   npm              npm                                      test         installs the npm items below
apt   python3.11       /usr/bin/python3.11                      test,package  Debian's stripped non-PIE CPython, profiled without symbols; the interpreter of the magics' venv
apt   python3-pip      py:pip                                   test,package,wheel,bench  installs the pip items below
apt   python3-venv     py:venv,py:ensurepip                         package      tests/package/wheel.sh installs the wheel into a fresh venv
apt   golang-go        go                                       test         `go tool pprof` reads sprofd's pprof output
apt   tmux             tmux                                     test         `sprofd top` is driven in a tmux pane
apt   man-db           man                                      test,package  the man page is rendered with `man -l`
apt   debuginfod       debuginfod                               test         a loopback debuginfod server serves debug files by build-id
apt   prometheus       prometheus                               test         a real Prometheus scrapes the daemon's /metrics
apt   chromium         chromium                                 test,package  headless Chromium renders the daemon's page and flame graphs, and the magics' notebook outputs
apt   zsh              zsh                                      test,package  the zsh completion is syntax-checked (zsh -n)
apt   fish             fish                                     test,package  the fish completion is syntax-checked (fish -n)
apt   lintian          lintian                                  package      tests/package/deb.sh fails on lintian errors
apt   systemd          systemd-analyze                          package      tests/package/unit.sh: systemd-analyze verify and security --offline
apt   dpkg             dpkg-deb                                 package      reads the .deb's contents and control files
apt   dpkg-dev         dpkg-shlibdeps                           deb,package  cargo-deb computes Depends: with it
apt   curl             curl                                     bench        the daemon benchmark queries the HTTP API
apt   sqlite3          sqlite3                                  bench        one of the benchmarks' real stripped programs
rustup clippy          cargo-clippy                             test,lint    `cargo clippy -D warnings` in make test
rustup rustfmt         rustfmt,cargo-fmt                        test,lint    `cargo fmt --check` in make test
pip   maturin==1.16.0  py:maturin                               wheel,package  builds the wheel (make wheel, tests/package/wheel.sh)
pip   py-spy==0.4.3    py-spy                                   test,bench   an oracle for the Python reader's live tests; compared against in the benchmark
pip   playwright==1.65.3  py:playwright                          test,package  drives Debian's chromium (executable_path=/usr/bin/chromium) through the daemon's page (tests/tests/page.rs), the magics' notebook outputs (tests/package/magics_render.py), the heatmap page (tests/fixtures/heatmap_check.py), the speedscope app (speedscope_check.py) and the timeline chart (timeline_check.py); its own browser download is not used
npm   speedscope@1.25.0  /usr/lib/node_modules/speedscope/dist/release/index.html  test  the real speedscope app opens sprofd's .speedscope.json (time order; tests/fixtures/speedscope_check.py)
pip   memray==1.20.0   memray                                   bench        compared against in the memory benchmark (bench/memory.sh)
pip   memory_profiler==0.61.0  mprof                            bench        compared against in the memory benchmark (mprof run samples RSS)
pip   austin-dist==3.7.0  austin                                bench        compared against in the Python and off-CPU benchmarks
venv  ipython==9.19.1,ipykernel==7.4.0,nbclient==0.11.0  $ROOT/target/magics-venv/bin/ipython  package  tests/package/magics.sh installs the wheel here and runs %sprofd in IPython and in notebooks (nbclient); Debian's python3, so that an unprivileged user can run it too
cargo cargo-deb@3.8.0  cargo-deb                                deb,package  builds the .deb; pinned: tests/package/deb.sh checks its layout and maintainer scripts
cargo samply@0.13.1    samply                                   bench        compared against in the symbolization benchmark
cargo inferno@0.12.8   inferno-collapse-perf,inferno-flamegraph bench        perf script | inferno, the flame-graph time the benchmark compares to (same inferno as sprofd's)
git   pyenv@v2.6.30    $PYENV_ROOT/bin/pyenv                    test         builds the CPython versions below (https://github.com/pyenv/pyenv)
pyenv 3.7.16           $PYENV_ROOT/versions/3.7.16/bin/python3.7    test     CPython 3.7: an older version must be reported as unsupported
pyenv 3.8.18           $PYENV_ROOT/versions/3.8.18/bin/python3.8    test     CPython 3.8 frames (pyenv's build: shared libpython, PIE)
pyenv 3.9.18           $PYENV_ROOT/versions/3.9.18/bin/python3.9    test     CPython 3.9 frames
pyenv 3.10.13          $PYENV_ROOT/versions/3.10.13/bin/python3.10  test     CPython 3.10 frames
pyenv 3.11.7           $PYENV_ROOT/versions/3.11.7/bin/python3.11   test     CPython 3.11 frames
pyenv 3.12.1           $PYENV_ROOT/versions/3.12.1/bin/python3.12   test     CPython 3.12 frames, -X perf, containers
pyenv 3.13.0           $PYENV_ROOT/versions/3.13.0/bin/python3.13   test     CPython 3.13 frames and its perf jitdump
mount tracefs          /sys/kernel/tracing/events               test         --mode memory's [kept]/[freed] split opens the syscall tracepoints, whose ids tracefs gives (systemd mounts it at boot; a bare VM may not)
root  sid              /srv/sid/usr/bin/python3.14,/srv/sid/usr/bin/python3.15  test,bench  Debian unstable (debootstrap --variant=minbase), for CPython 3.14 and 3.15 (~330 MB)
apt   debootstrap      debootstrap                              @sid-build   builds /srv/sid
apt   build-essential,libssl-dev,zlib1g-dev,libbz2-dev,libreadline-dev,libsqlite3-dev,libncurses-dev,libffi-dev,liblzma-dev,uuid-dev,tk-dev  /usr/include/openssl/ssl.h,/usr/include/zlib.h,/usr/include/bzlib.h,/usr/include/readline/readline.h,/usr/include/sqlite3.h,/usr/include/ncurses.h,/usr/include/ffi.h,/usr/include/lzma.h,/usr/include/uuid/uuid.h,/usr/include/tk.h  @pyenv-build  what `pyenv install` compiles CPython with
EOF
)

SID_ROOT=/srv/sid
SID_MIRROR=${SPROFD_SID_MIRROR:-http://deb.debian.org/debian}
LOG=${SPROFD_DEPS_LOG:-${TMPDIR:-/tmp}/sprofd-deps.log}
REQUIRE=${SPROFD_REQUIRE_LIVE:-0}
ALL_GROUPS=(test package wheel deb lint bench)

if [[ -z ${PYENV_ROOT:-} ]]; then
	PYENV_ROOT=$(pyenv root 2>/dev/null) || PYENV_ROOT=$HOME/.pyenv
fi
[[ -n $PYENV_ROOT ]] || PYENV_ROOT=$HOME/.pyenv
export PYENV_ROOT

say() { printf 'sprofd deps: %s\n' "$*"; }

# The python3 on PATH, resolved once (a pyenv shim costs a fork of bash and pyenv per call).
PY=
resolve_python() {
	PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=
	[[ -n $PY ]] || PY=python3
}
py() { "$PY" "$@"; }
FAILED=()
cannot() { # cannot ITEM WHY
	say "cannot install $1 ($2)"
	FAILED+=("$1")
}

# Manifest rows for the groups asked for, as "kind|name|provides|groups|why".
rows() { # rows GROUP...
	local kind name provides groups why g want
	while read -r kind name provides groups why; do
		[[ -z $kind || $kind == \#* ]] && continue
		want=0
		for g in "$@"; do
			[[ ,$groups, == *",$g,"* || ($groups == all && $g != @*) ]] && want=1
		done
		((want)) && printf '%s|%s|%s|%s|%s\n' "$kind" "$name" "$provides" "$groups" "$why"
	done <<<"$MANIFEST"
}

expand() { local s=${1//\$PYENV_ROOT/$PYENV_ROOT}; printf '%s' "${s//\$ROOT/$ROOT}"; }

# present KIND NAME PROVIDES: whether the item is installed (and at its pinned version).
present() {
	local kind=$1 name=$2 tok
	local -a toks
	IFS=, read -r -a toks <<<"$3"
	for tok in "${toks[@]}"; do
		tok=$(expand "$tok")
		case $tok in
		/*) [[ -e $tok ]] || return 1 ;;
		py:*) py -c "import ${tok#py:}" >/dev/null 2>&1 || return 1 ;;
		*) command -v "$tok" >/dev/null 2>&1 || return 1 ;;
		esac
	done
	case $kind in
	pip) # maturin==1.16.0: the distribution at that version in python3's environment
		[[ $(py -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "${name%%==*}" 2>/dev/null) == "${name#*==}" ]] ;;
	npm) # speedscope@1.25.0: npm's global package at that version
		[[ $(npm ls -g --depth=0 "${name%@*}" 2>/dev/null | grep -o "${name%@*}@[^ ]*") == "$name" ]] ;;
	venv) # every requirement at its version in the venv of the first path
		local vpy req
		vpy=$(dirname "$(expand "${toks[0]}")")/python
		for req in ${name//,/ }; do
			[[ $("$vpy" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "${req%%==*}" 2>/dev/null) == "${req#*==}" ]] || return 1
		done
		;;
	cargo) # cargo-deb@3.8.0: cargo installed that version (inferno's commands have no --version)
		cargo install --list 2>/dev/null | grep -qxF "${name%@*} v${name#*@}:" ;;
	rustup) # rustup's proxies exist without the component; they fail to run then.
		"${toks[0]}" --version >/dev/null 2>&1 ;;
	*) return 0 ;;
	esac
}

# absent PROVIDES: the tokens of PROVIDES that are not there, space-separated.
absent() {
	local tok out=()
	local -a toks
	IFS=, read -r -a toks <<<"$1"
	for tok in "${toks[@]}"; do
		present x x "$tok" || out+=("$(expand "$tok")")
	done
	printf '%s' "${out[*]}"
}

# run_logged CMD...: runs CMD with its output in $STEP_LOG (for log_tail) and appended to $LOG.
STEP_LOG=
run_logged() {
	[[ -n $STEP_LOG ]] || { STEP_LOG=$(mktemp "${TMPDIR:-/tmp}/sprofd-deps-step.XXXXXX") && trap 'rm -f "$STEP_LOG"' EXIT; }
	local rc=0
	"$@" >"$STEP_LOG" 2>&1 || rc=$?
	{ echo "## $(date '+%F %T') $*"; cat "$STEP_LOG"; } >>"$LOG" 2>/dev/null
	return $rc
}
# The last lines the failed command printed, on one line.
log_tail() { grep -v '^[[:space:]]*$' "$STEP_LOG" 2>/dev/null | tail -n 2 | tr '\n' ' ' | cut -c1-240 | sed 's/ *$//'; }

# ---------------------------------------------------------------------------------------------
# Installers. Each checks first what it needs (root, pip, cargo...), so that an item that cannot
# be installed is a single "cannot install" line.
# ---------------------------------------------------------------------------------------------
APT_UPDATED=0
# apt_get PKG...: apt-get install, after one apt-get update per run.
apt_get() {
	if ((!APT_UPDATED)); then
		run_logged apt-get update -qq || return 1
		APT_UPDATED=1
	fi
	run_logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# apt_items "PKG [PKG...]|WHY"...: one apt-get install for all of them; if that fails, one per
# item, so that each failure is named.
apt_items() {
	local it pkgs=() rc=0
	local -a more
	if [[ $(id -u) != 0 ]]; then
		for it in "$@"; do cannot "${it%%|*}" "apt-get needs root: sudo apt-get install ${it%%|*}"; done
		return 1
	fi
	for it in "$@"; do
		say "installing ${it%%|*} (apt: ${it#*|})"
		read -r -a more <<<"${it%%|*}"
		pkgs+=("${more[@]}")
	done
	apt_get "${pkgs[@]}" && { hash -r; return 0; }
	for it in "$@"; do
		read -r -a more <<<"${it%%|*}"
		apt_get "${more[@]}" || { cannot "${it%%|*}" "apt-get failed: $(log_tail)"; rc=1; }
	done
	hash -r
	return $rc
}

# group_missing @GROUP: "PKG [PKG...]|WHY" for each missing item of an internal group.
group_missing() {
	local kind name provides groups why
	while IFS='|' read -r kind name provides groups why; do
		present "$kind" "$name" "$provides" || printf '%s|%s\n' "${name//,/ }" "$why"
	done < <(rows "$1")
}

# ensure_group @GROUP: install the missing build dependencies of an internal group, once a run.
declare -A GROUP_RC=()
ensure_group() {
	[[ -n ${GROUP_RC[$1]:-} ]] && return "${GROUP_RC[$1]}"
	local missing=() rc=0
	mapfile -t missing < <(group_missing "$1")
	if ((${#missing[@]})); then apt_items "${missing[@]}" || rc=1; fi
	GROUP_RC[$1]=$rc
	return $rc
}

# blocker KIND NAME: why the item cannot be installed here (empty: it can be tried).
blocker() {
	local kind=$1 name=$2 pkgs
	case $kind in
	pip) py -m pip --version >/dev/null 2>&1 || echo "python3 has no pip: apt-get install python3-pip" ;;
	venv) /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || echo "Debian's python3 cannot make a venv: apt-get install python3-venv" ;;
	cargo) command -v cargo >/dev/null || echo "no cargo: install the Rust toolchain (rustup.rs)" ;;
	npm) command -v npm >/dev/null || echo "no npm: apt-get install npm" ;;
	rustup) command -v rustup >/dev/null || echo "no rustup: the component comes with rustup's toolchains" ;;
	git)
		if ! command -v git >/dev/null; then
			echo "no git"
		elif [[ -n $(ls -A "$PYENV_ROOT" 2>/dev/null) ]]; then
			echo "$PYENV_ROOT exists without bin/pyenv"
		fi
		;;
	pyenv)
		if [[ ! -x $PYENV_ROOT/bin/pyenv ]]; then
			echo "no pyenv at $PYENV_ROOT/bin/pyenv"
		elif [[ $(id -u) != 0 && -z ${GROUP_RC[@pyenv-build]:-} ]]; then
			pkgs=$(group_missing @pyenv-build | cut -d'|' -f1 | tr '\n' ' ')
			[[ -z $pkgs ]] || echo "building CPython needs ${pkgs% }, and apt-get needs root"
		elif [[ ${GROUP_RC[@pyenv-build]:-0} != 0 ]]; then
			echo "the packages CPython is built with are missing"
		fi
		;;
	mount) [[ $(id -u) == 0 ]] || echo "mounting $name needs root" ;;
	root)
		if [[ $(id -u) != 0 ]]; then
			echo "debootstrap needs root"
		# why: blocker runs in $(...): the install message must not become the reason.
		elif ! command -v debootstrap >/dev/null && ! ensure_group @sid-build >&2; then
			echo "no debootstrap"
		fi
		;;
	esac
}

pip_install() { # pip_install SPEC
	local -a env=(PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1)
	# Debian's own python3 refuses pip outside a venv (PEP 668); these are test tools.
	if py -c 'import sys, sysconfig, os; sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' 2>/dev/null; then
		env+=(PIP_BREAK_SYSTEM_PACKAGES=1)
	fi
	run_logged env "${env[@]}" "$PY" -m pip install -q "$1" || { cannot "$1" "pip install failed: $(log_tail)"; return 1; }
	# pyenv's shims for the console scripts pip just installed
	if command -v pyenv >/dev/null; then pyenv rehash >/dev/null 2>&1 || true; fi
}

venv_install() { # venv_install REQ,REQ... PROVIDES: a fresh venv, its requirements from PyPI
	local dir
	dir=$(dirname "$(dirname "$(expand "${2%%,*}")")")
	rm -rf "$dir" && mkdir -p "$(dirname "$dir")"
	run_logged /usr/bin/python3 -m venv "$dir" || { cannot "$1" "python3 -m venv failed: $(log_tail)"; return 1; }
	run_logged env PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/pip" install -q ${1//,/ } \
		|| { cannot "$1" "pip install into $dir failed: $(log_tail)"; rm -rf "$dir"; return 1; }
}

cargo_install() { # cargo_install CRATE@VERSION
	# nice: it compiles for minutes, usually beside other builds.
	run_logged nice -n 10 cargo install -q --locked "${1%@*}" --version "${1#*@}" \
		|| { cannot "$1" "cargo install failed: $(log_tail)"; return 1; }
}

pyenv_clone() { # pyenv_clone pyenv@TAG
	run_logged git clone -q --depth 1 --branch "${1#*@}" https://github.com/pyenv/pyenv "$PYENV_ROOT" \
		|| { cannot "$1" "git clone failed: $(log_tail)"; return 1; }
}

pyenv_build() { # pyenv_build VERSION
	ensure_group @pyenv-build || { cannot "CPython $1" "the packages CPython is built with are missing"; return 1; }
	run_logged nice -n 10 "$PYENV_ROOT/bin/pyenv" install -s "$1" \
		|| { cannot "CPython $1" "pyenv install $1 failed: $(log_tail)"; return 1; }
}

# root_build sid: debootstrap into a temporary directory beside the root, renamed into place
# when complete, so that an interrupted run never leaves a half root that looks finished.
root_build() {
	local name=$1 tmp
	tmp=$(dirname "$SID_ROOT")/.$(basename "$SID_ROOT").tmp
	mkdir -p "$(dirname "$SID_ROOT")" && rm -rf "$tmp"
	if ! run_logged debootstrap --variant=minbase --include=python3.14,python3.15 "$name" "$tmp" "$SID_MIRROR"; then
		cannot "$SID_ROOT" "debootstrap failed: $(log_tail)"
		rm -rf "$tmp"
		return 1
	fi
	rm -rf "$SID_ROOT" && mv "$tmp" "$SID_ROOT"
}

label() { # label KIND NAME: how the item is named in messages
	case $1 in
	rustup) echo "rustup component $2" ;;
	pyenv) echo "CPython $2" ;;
	root) echo "$SID_ROOT" ;;
	*) echo "$2" ;;
	esac
}

install_missing() { # install_missing GROUP...
	local kind name provides groups why row reason also gone
	local -a apt_items=() other=()
	while IFS='|' read -r kind name provides groups why; do
		present "$kind" "$name" "$provides" && continue
		case $kind in
		base) cannot "$(absent "$provides")" "part of the base machine ($name), which this script does not install: see docs/install.md" ;;
		apt) apt_items+=("${name//,/ }|$why") ;;
		*) other+=("$kind|$name|$provides|$why") ;;
		esac
	done < <(rows "$@")

	# apt first: pip, pyenv and the root need some of it.
	((${#apt_items[@]} == 0)) || apt_items "${apt_items[@]}"

	for row in "${other[@]}"; do
		IFS='|' read -r kind name provides why <<<"$row"
		present "$kind" "$name" "$provides" && continue # an earlier item brought it
		reason=$(blocker "$kind" "$name")
		if [[ -n $reason ]]; then
			cannot "$(label "$kind" "$name")" "$reason"
			continue
		fi
		case $kind in
		pip) say "installing $name (pip: $why)" && pip_install "$name" ;;
		venv) say "installing $name into a venv (pip: $why)" && venv_install "$name" "$provides" ;;
		cargo) say "installing $name (cargo install --locked: $why)" && cargo_install "$name" ;;
		npm)
			say "installing $name (npm install -g: $why)"
			run_logged npm install -g -q "$name" || cannot "$name" "npm install failed: $(log_tail)"
			;;
		rustup)
			say "installing rustup component $name ($why)"
			run_logged rustup component add "$name" || cannot "rustup component $name" "rustup failed: $(log_tail)"
			;;
		git) say "installing $name into $PYENV_ROOT (git clone: $why)" && pyenv_clone "$name" ;;
		mount)
			say "mounting $name at $(dirname "$provides") ($why)"
			run_logged mount -t "$name" nodev "$(dirname "$provides")" || cannot "$name" "mount failed: $(log_tail)"
			;;
		pyenv) say "installing CPython $name (pyenv install, minutes: $why)" && pyenv_build "$name" ;;
		root)
			also=""
			[[ -e $SID_ROOT ]] && also=", replacing the existing $SID_ROOT, which lacks part of it"
			say "installing $SID_ROOT (debootstrap $name, minutes$also: $why)" && root_build "$name"
			;;
		esac
		hash -r
	done

	# What an installer said it installed but is still not there (a console script off PATH).
	while IFS='|' read -r kind name provides groups why; do
		[[ $kind == base ]] && continue
		present "$kind" "$name" "$provides" && continue
		[[ " ${FAILED[*]} " == *" $(label "$kind" "${name//,/ }") "* ]] && continue
		gone=$(absent "$provides")
		if [[ -n $gone ]]; then
			cannot "$(label "$kind" "$name")" "installed, but $gone is still not found: is its directory on PATH?"
		else
			cannot "$(label "$kind" "$name")" "installed, but another version comes first on PATH"
		fi
	done < <(rows "$@")
}

# ---------------------------------------------------------------------------------------------
# --check-coverage: the external commands the tests and scripts run, against the manifest.
# ---------------------------------------------------------------------------------------------
check_coverage() {
	local provided
	provided=$(while IFS='|' read -r kind name provides groups why; do
		printf '%s\n' "${provides//,/$'\n'}"
		[[ $kind == pyenv ]] && printf 'pyenv:%s\n' "$name"
		[[ $kind == root ]] && printf 'root:/srv/%s\n' "$name"
	done < <(rows "${ALL_GROUPS[@]}" @sid-build @pyenv-build))
	# docs/install.md must name every item, in backquotes (the same list, for installing by hand).
	local undocumented=() piece
	while IFS='|' read -r kind name provides groups why; do
		[[ $kind == base ]] && continue
		[[ $kind == root ]] && name=/srv/$name
		for piece in ${name//,/ }; do
			grep -qF -- "\`$piece\`" "$ROOT/docs/install.md" || undocumented+=("$piece")
		done
	done < <(rows "${ALL_GROUPS[@]}")
	if ((${#undocumented[@]})); then
		echo "sprofd deps: in tests/deps.sh's MANIFEST but not in docs/install.md: ${undocumented[*]}" >&2
		return 1
	fi
	cd "$ROOT" && python3 - "$provided" <<'PY'
import glob, os, re, shlex, sys

provided = set(sys.argv[1].split())
cmds = set(p for p in provided if "/" not in p and not p.startswith(("py:", "pyenv:", "root:")))
cmds |= set(os.path.basename(p) for p in provided if "/" in p)
modules = set(p[3:] for p in provided if p.startswith("py:"))
pyenv_versions = set(p[6:] for p in provided if p.startswith("pyenv:"))
roots = set(p[5:] for p in provided if p.startswith("root:"))
paths = set(p for p in provided if p.startswith("/"))

# Builtins and keywords whose arguments are not commands.
SKIP_ARGS = set("""for in select function case echo printf read cd exit return local export set
shift trap wait source . eval test [ true false : declare typeset unset let readonly type hash
mapfile readarray pushd popd getopts ulimit umask jobs bg fg disown builtin break continue
alias""".split())
# Commands whose first plain argument is itself a command.
WRAPPERS = {"exec", "command", "nice", "timeout", "xargs", "env", "sudo", "nohup", "taskset",
            "setpriv", "unshare", "stdbuf", "chrt", "time"}
CMD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._+-]*$")
CARGO_BUILTIN = set("""build b check c clean doc d new init add remove run r test t bench
update search publish install uninstall metadata tree fetch package pkgid rustc rustdoc
locate-project version help vendor verify-project login logout owner yank generate-lockfile
fix config report info""".split())
PUNCT = set("();<>|&\n")

found = {}  # (kind, name) -> first file seen in


def note(kind, name, where):
    found.setdefault((kind, name), where)


def skip_subst(s, i):
    """s[i:] follows "$(" or "(": the index after the matching ")"."""
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
        elif c == "'":
            j = s.find("'", i + 1)
            i = len(s) if j < 0 else j + 1
        elif c == '"':
            i = skip_dq(s, i + 1)
        elif c == "(":
            i = skip_subst(s, i + 1)
        elif c == ")":
            return i + 1
        else:
            i += 1
    return i


def skip_dq(s, i):
    """s[i:] follows an opening double quote: the index after the closing one."""
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif s.startswith("$(", i):
            i = skip_subst(s, i + 2)
        else:
            i += 1
    return i


def flatten(s):
    """The shell text with comments, single-quoted strings (awk and sed programs) and escaped
    backquotes (Markdown in echo) dropped, and each $( ... ) or ` ... ` replaced by a
    placeholder word; returns (text, [the substitutions' contents])."""
    out, subs, i, dq = [], [], 0, False
    while i < len(s):
        c = s[i]
        if c == "\\":
            out.append("" if s[i + 1:i + 2] == "`" else s[i:i + 2])
            i += 2
        elif not dq and c == "#" and (i == 0 or s[i - 1] in " \t\n;&|("):
            while i < len(s) and s[i] != "\n":
                i += 1
        elif not dq and c == "'":
            j = s.find("'", i + 1)
            i = len(s) if j < 0 else j + 1
            out.append("''")
        elif c == '"':
            dq = not dq
            out.append(c)
            i += 1
        elif s.startswith("$((", i):
            i = skip_subst(s, i + 3)
            i = i + 1 if s[i:i + 1] == ")" else i
            out.append("0")
        elif s.startswith("$(", i):
            j = skip_subst(s, i + 2)
            subs.append(s[i + 2:j - 1])
            out.append("SUBST")
            i = j
        elif c == "`":
            j = s.find("`", i + 1)
            j = len(s) if j < 0 else j
            subs.append(s[i + 1:j])
            out.append("SUBST")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), subs


def drop_heredocs(text):
    out, end = [], None
    for line in text.split("\n"):
        if end is not None:
            if line.strip() == end:
                end = None
            out.append("")
            continue
        m = re.search(r"<<-?\s*['\"]?([A-Za-z_]+)['\"]?", line.replace("<<<", "   "))
        if m:
            end = m.group(1)
        out.append(line)
    return "\n".join(out)


def scan_shell(text, where, funcs=None):
    text, subs = flatten(drop_heredocs(text).replace("\\\n", " "))
    # `case WORD in`: what follows "in" (and each ";;") are patterns, up to ")".
    text = re.sub(r"\bcase\s+(\S+)\s+in\b", r"case \1 in ;;", text)
    if funcs is None:
        funcs = set(re.findall(r"^\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)", text, re.M))
    for sub in subs:
        scan_shell(sub, where, funcs)
    lx = shlex.shlex(text, posix=True, punctuation_chars="();<>|&\n")
    lx.whitespace = " \t\r"
    lx.commenters = ""
    lx.wordchars += "$@{}[]%+:,!^*?=~"
    try:
        toks = list(lx)
    except ValueError:  # unbalanced quotes in an odd construct: scan what is there
        toks = text.split()
    cmdpos, skip_to, case_pat, depth, prev, wrapped, after_c = True, None, False, 0, "", False, False
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        nxt2 = toks[i + 2] if i + 2 < len(toks) else ""
        if after_c:  # sh -c '...' / bash -c "..."
            scan_shell(t, where, funcs)
            after_c = False
        p = t.strip()
        if skip_to:
            if p == skip_to or (skip_to == "))" and "))" in p):
                skip_to = None
        elif case_pat:
            if p == "esac":
                case_pat, depth, cmdpos = False, depth - 1, False
            elif ")" in p:
                case_pat, cmdpos = False, True
        elif t and set(t) <= PUNCT:
            wrapped = False
            if "<" in t or ">" in t:
                pass  # a redirection: the next word is a file
            elif p.startswith("(("):
                skip_to = "))"
            elif p.startswith("(") and prev.endswith("="):
                skip_to = ")"  # an array literal
            else:
                cmdpos = True
                case_pat = ";;" in p and depth > 0
        elif t == "[[":
            skip_to = "]]"
        elif cmdpos:
            cmdpos = False
            if t == "case":
                depth += 1
                skip_to = "in"
            elif t == "esac":
                depth -= 1
            elif re.match(r"^[A-Za-z_]\w*(\[[^]]*\])?\+?=", t):
                cmdpos = True  # an assignment before the command
            elif t in ("if", "then", "else", "elif", "while", "until", "do", "!", "{", "time"):
                cmdpos = True
            elif t in ("fi", "done", "}"):
                pass
            elif t in SKIP_ARGS:
                if t == "trap":
                    scan_shell(nxt, where, funcs)
            else:
                name = os.path.basename(t) if t.startswith("/") else t
                if CMD_RE.match(name) and name not in funcs:
                    if name not in ("exec", "command", "time"):
                        note("cmd", name, where)
                    if name in ("sh", "bash", "zsh") and nxt == "-c":
                        after_c = True
                    if name.startswith("python") and nxt == "-m":
                        note("py", nxt2, where)
                    if name == "cargo" and CMD_RE.match(nxt) and nxt not in CARGO_BUILTIN:
                        note("cmd", "cargo-" + nxt, where)
                    if name == "command" and nxt == "-v" and CMD_RE.match(nxt2):
                        note("cmd", nxt2, where)
                    wrapped = name in WRAPPERS
        elif wrapped:
            # `nice -n 10 cargo ...`, `taskset -c 0 X`: the first plain word is the command
            if not (t.startswith("-") or re.match(r"^[\d.,]+[smhd]?$", t) or "=" in t):
                name = os.path.basename(t) if t.startswith("/") else t
                if CMD_RE.match(name) and name not in funcs and name != "SUBST":
                    note("cmd", name, where)
                wrapped = False
        prev = t


def scan_rust(text, where):
    for m in re.finditer(r'Command::new\(\s*"([^"]+)"\s*\)', text):
        note("cmd", os.path.basename(m.group(1)), where)
    # the command `sprofd record|top ... -- CMD` launches
    for m in re.finditer(r'"--"\s*,\s*"([A-Za-z][\w.+-]*)"', text):
        note("cmd", m.group(1), where)
    # tool lists that tests look up or skip on
    for m in re.finditer(r'for\s+(?:tool|shell|cmd|prog|bin)\s+in\s+\[([^\]]*)\]', text):
        for n in re.findall(r'"([^"]+)"', m.group(1)):
            note("cmd", n, where)
    # PATH walks: split_paths(..).map(|p| p.join("node")), .split(':').map(|d| ..join("python3"))
    for m in re.finditer(r"(?:split_paths|split\(':'\))[^;]{0,200}?\.join\(\"([^\"]+)\"\)", text, re.S):
        note("cmd", m.group(1), where)
    # interpreters: pyenv versions, Debian's, and debootstrapped roots under /srv
    for m in re.finditer(r'versions/(\d+\.\d+\.\d+)', text):
        note("pyenv", m.group(1), where)
    if "pyenv" in text:
        for m in re.finditer(r'"(\d\.\d+\.\d+)"', text):
            note("pyenv", m.group(1), where)
    for m in re.finditer(r'"(/usr/bin/python\d\.\d+)"', text):
        note("path", m.group(1), where)
    for m in re.finditer(r'"(/srv/[\w-]+)(?=[/"])', text):
        note("root", m.group(1), where)


def scan_make(text, where):
    for line in text.replace("\\\n", " ").split("\n"):  # recipe lines start with a tab
        if line.startswith("\t"):
            line = line.replace("$(CARGO)", "cargo").replace("$(MAKE)", "make").replace("$$", "$")
            scan_shell(re.sub(r"\$\([A-Za-z_]+\)", "$X", line.lstrip("\t@-")), where)


rust = sorted(glob.glob("tests/src/*.rs") + glob.glob("tests/tests/*.rs")
              + glob.glob("crates/*/tests/*.rs") + glob.glob("symbolizer/tests/*.rs")
              + glob.glob("flamegraph-out/tests/*.rs") + glob.glob("profiler-daemon/tests/*.rs"))
shell = sorted(glob.glob("tests/package/*.sh") + glob.glob("bench/*.sh") + [".ci/run"])
for f in rust:
    scan_rust(open(f).read(), f)
for f in shell:
    if os.path.exists(f):
        scan_shell(open(f).read(), f)
scan_make(open("Makefile").read(), "Makefile")

missing = []
for (kind, name), where in sorted(found.items()):
    if kind == "cmd" and name not in cmds and name not in ("sprofd", "SUBST") and "no-such" not in name:
        missing.append(f"command {name} (run in {where})")
    elif kind == "py" and name not in modules:
        missing.append(f"python module {name} (python3 -m {name} in {where})")
    elif kind == "pyenv" and name not in pyenv_versions:
        missing.append(f"CPython {name} from pyenv (in {where})")
    elif kind == "path" and name not in paths:
        missing.append(f"{name} (in {where})")
    elif kind == "root" and name not in roots:
        missing.append(f"root {name} (in {where})")
if os.environ.get("SPROFD_DEPS_SHOW"):
    for (kind, name), where in sorted(found.items()):
        print(f"{kind}\t{name}\t{where}")
if missing:
    print("sprofd deps: used by the tests or scripts but not in tests/deps.sh's MANIFEST:", file=sys.stderr)
    for m in missing:
        print("  " + m, file=sys.stderr)
    sys.exit(1)
print(f"sprofd deps: coverage ok: the {len(found)} commands, modules, interpreters and roots "
      f"that the tests and scripts use are all in the manifest")
PY
}

list() { # list GROUP...
	local kind name provides groups why
	while IFS='|' read -r kind name provides groups why; do
		printf '%-6s %-20s %-24s %s\n' "$kind" "$name" "$groups" "$why"
	done < <(rows "$@")
}

# ---------------------------------------------------------------------------------------------
mode=install
case ${1:-} in
--list | --missing | --check-coverage) mode=${1#--} && shift ;;
-h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
-*) echo "usage: $0 [--list|--missing|--check-coverage] [GROUP...]" >&2 && exit 2 ;;
esac
groups=("$@")
((${#groups[@]})) || groups=("${ALL_GROUPS[@]}")
for g in "${groups[@]}"; do
	[[ " ${ALL_GROUPS[*]} " == *" $g "* || $g == @* ]] || { echo "sprofd deps: unknown group $g (groups: ${ALL_GROUPS[*]})" >&2; exit 2; }
done

resolve_python
case $mode in
list) list "${groups[@]}" ;;
check-coverage) check_coverage || exit 1 ;;
missing)
	while IFS='|' read -r kind name provides _ _; do
		present "$kind" "$name" "$provides" || printf '%s %s\n' "$kind" "$name"
	done < <(rows "${groups[@]}")
	;;
install)
	install_missing "${groups[@]}"
	if ((${#FAILED[@]})); then
		if [[ $REQUIRE == 1 ]]; then
			say "SPROFD_REQUIRE_LIVE=1: ${#FAILED[@]} item(s) missing; the tests that need them would fail"
			exit 1
		fi
		say "the tests that need these skip (SPROFD_REQUIRE_LIVE=1 makes that a failure); details in $LOG"
	fi
	;;
esac
exit 0
