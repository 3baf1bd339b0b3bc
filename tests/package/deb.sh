#!/usr/bin/env bash
# The Debian package as an administrator gets it: build it with `make deb` (cargo-deb), then
# check what it installs and with which modes, its conffiles and maintainer scripts (the unit is
# neither enabled nor started on install, and is stopped on removal), lintian, the man page and
# the completions. Run by `make test` (through `make package-test`). Needs cargo-deb, lintian,
# dpkg-deb, man and bash; tests/deps.sh installs them (make package-test runs it first).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
passed=0
fail() { echo "deb-test: FAILED: $*" >&2; exit 1; }
ok() { echo "deb-test: ok: $*"; passed=$((passed + 1)); }
for tool in cargo-deb lintian dpkg-deb man; do
	command -v "$tool" >/dev/null || fail "$tool missing (bash tests/deps.sh installs it)"
done

rm -rf target/debian
make -s --no-print-directory deb >/dev/null
debs=(target/debian/sprofd_*.deb)
[[ ${#debs[@]} == 1 && -f ${debs[0]} ]] || fail "make deb made ${debs[*]}"
deb=${debs[0]}
case $deb in target/debian/sprofd_0.1.0-1_amd64.deb) ;; *) fail "unexpected file name: $deb" ;; esac
ok "make deb built $deb"

tmp=$(mktemp -d /tmp/sprofd-deb-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Contents: every file, its mode, nothing else (directories aside).
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $6 }' | sort >"$tmp/files"
sort >"$tmp/want" <<'EOF'
-rwxr-xr-x ./usr/bin/sprofd
-rw-r--r-- ./usr/lib/systemd/system/sprofd.service
-rw-r--r-- ./etc/sprofd/sprofd.toml
-rw-r--r-- ./usr/share/man/man1/sprofd.1.gz
-rw-r--r-- ./usr/share/bash-completion/completions/sprofd
-rw-r--r-- ./usr/share/zsh/vendor-completions/_sprofd
-rw-r--r-- ./usr/share/fish/vendor_completions.d/sprofd.fish
-rw-r--r-- ./usr/share/doc/sprofd/copyright
-rw-r--r-- ./usr/share/doc/sprofd/changelog.Debian.gz
-rw-r--r-- ./usr/share/doc/sprofd/README.md
EOF
diff -u "$tmp/want" "$tmp/files" >&2 || fail "dpkg-deb -c: the files above differ (- expected, + packaged)"
ok "dpkg-deb -c: the 10 expected files with their modes, no others"
# Installing must not enable the unit: no .wants symlink shipped.
! grep -q '\.wants/' "$tmp/files" || fail "the package ships a .wants symlink"
ok "no .wants/ symlink in the package"

# Control fields.
control=$(dpkg-deb -f "$deb")
grep -q '^Package: sprofd$' <<<"$control" || fail "control: $control"
grep -q '^Depends: .*libc6' <<<"$control" || fail "control Depends: $control"
grep -q '^Maintainer: .*<.*@.*>$' <<<"$control" || fail "control Maintainer: $control"
grep -q '^ sprofd samples the call stacks' <<<"$control" || fail "control: no extended description: $control"
ok "dpkg-deb -f: Package, Depends on libc6, Maintainer, extended description"

# Conffiles, and the maintainer scripts cargo-deb generated for the unit.
mkdir "$tmp/ctrl"
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp/ctrl"
[[ $(cat "$tmp/ctrl/conffiles") == /etc/sprofd/sprofd.toml ]] || fail "conffiles: $(cat "$tmp/ctrl/conffiles")"
info=$(dpkg-deb -I "$deb")
grep -q ' conffiles *$' <<<"$info" || fail "dpkg-deb -I lists no conffiles: $info"
ok "conffiles: exactly /etc/sprofd/sprofd.toml"
postinst=$tmp/ctrl/postinst
[[ -f $postinst ]] || fail "no postinst"
if grep -nE 'deb-systemd-invoke +(start|restart) |systemctl +(start|enable)' "$postinst" >&2; then
	fail "postinst starts or enables sprofd.service (lines above)"
fi
# deb-systemd-helper enable only re-creates links of a unit the admin had enabled.
awk '/was-enabled/ { guarded = 1 } /deb-systemd-helper enable/ && !guarded { bad = 1 } END { exit bad }' "$postinst" \
	|| fail "postinst enables sprofd.service unconditionally"
grep -q 'deb-systemd-invoke try-restart sprofd.service' "$postinst" || fail "postinst does not restart a running sprofd on upgrade"
grep -q 'deb-systemd-invoke stop sprofd.service' "$tmp/ctrl/prerm" || fail "prerm does not stop sprofd on removal"
grep -q 'deb-systemd-helper purge sprofd.service' "$tmp/ctrl/postrm" || fail "postrm does not purge the unit's state"
grep -q 'rm -rf /var/lib/private/sprofd /var/lib/sprofd' "$tmp/ctrl/postrm" || fail "postrm purge keeps the stored profiles"
for s in postinst prerm postrm; do sh -n "$tmp/ctrl/$s" || fail "$s: sh -n"; done
ok "maintainer scripts: unit not enabled or started on install, try-restart on upgrade, stopped on remove, state purged"

# The packaged files are the ones in the tree, and the binary runs.
mkdir "$tmp/root"
dpkg-deb -x "$deb" "$tmp/root"
cmp -s "$tmp/root/etc/sprofd/sprofd.toml" profiler-daemon/systemd/sprofd.toml || fail "packaged sprofd.toml differs from profiler-daemon/systemd/sprofd.toml"
cmp -s "$tmp/root/usr/lib/systemd/system/sprofd.service" profiler-daemon/systemd/sprofd.service || fail "packaged unit differs from profiler-daemon/systemd/sprofd.service"
grep -q '^ExecStart=/usr/bin/sprofd daemon --config /etc/sprofd/sprofd.toml$' "$tmp/root/usr/lib/systemd/system/sprofd.service" \
	|| fail "the packaged unit's ExecStart is not /usr/bin/sprofd daemon --config /etc/sprofd/sprofd.toml"
if grep -nvE '^(#.*)?$' "$tmp/root/etc/sprofd/sprofd.toml" >&2; then fail "sprofd.toml has uncommented settings (above)"; fi
grep -qx 'License: MIT OR Apache-2.0' "$tmp/root/usr/share/doc/sprofd/copyright" \
	|| fail "usr/share/doc/sprofd/copyright: $(cat "$tmp/root/usr/share/doc/sprofd/copyright")"
version=$("$tmp/root/usr/bin/sprofd" --version)
grep -q '^sprofd 0.1.0 (commit ' <<<"$version" || fail "packaged sprofd --version: $version"
sections=$(readelf -S "$tmp/root/usr/bin/sprofd")
! grep -q '\.debug_info' <<<"$sections" || fail "packaged binary is not stripped"
ok "packaged unit and config are the tree's, every setting commented out; copyright names the license; /usr/bin/sprofd --version: $version; stripped"

# lintian: no errors; warnings only the ones docs/install.md lists as kept.
kept_warnings='initial-upload-closes-no-bugs'
lintian_out=$(lintian "$deb" 2>&1) || true
echo "$lintian_out" | sed 's/^/deb-test: lintian: /'
if grep -q '^E: ' <<<"$lintian_out"; then fail "lintian reports errors (E: lines above)"; fi
unexpected=$(grep '^W: ' <<<"$lintian_out" | grep -vE ": ($kept_warnings)( |$)" || true)
[[ -z $unexpected ]] || fail "lintian warnings not listed in docs/install.md: $unexpected"
ok "lintian: no E: lines; W: only $kept_warnings"

# The man page renders, without groff warnings.
page=$tmp/root/usr/share/man/man1/sprofd.1.gz
warnings=$(man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed: $warnings"
[[ -z $warnings ]] || fail "man --warnings -l: $warnings"
rendered=$(MANWIDTH=80 man -P cat -l "$page" 2>/dev/null)
grep -q '^NAME' <<<"$rendered" && grep -q '^ *sprofd *- *Sampling' <<<"$rendered" || fail "man -l: no NAME section: $rendered"
ok "man -l usr/share/man/man1/sprofd.1.gz renders (NAME section, no warnings)"

# The completions load in their shells.
comp=$(bash -c "source '$tmp/root/usr/share/bash-completion/completions/sprofd'; complete -p sprofd") || fail "bash: the completion does not load"
grep -q ' sprofd$' <<<"$comp" || fail "complete -p sprofd: $comp"
ok "bash: $comp"
if command -v zsh >/dev/null; then
	zsh -n "$tmp/root/usr/share/zsh/vendor-completions/_sprofd" || fail "zsh -n _sprofd"
	ok "zsh -n _sprofd"
else
	echo "deb-test: SKIP zsh -n (no zsh)"
fi
if command -v fish >/dev/null; then
	fish -n "$tmp/root/usr/share/fish/vendor_completions.d/sprofd.fish" || fail "fish -n sprofd.fish"
	ok "fish -n sprofd.fish"
else
	echo "deb-test: SKIP fish -n (no fish)"
fi
echo "deb-test: $passed passed, 0 failed"
