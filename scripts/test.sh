#!/usr/bin/env bash
# The README's test command: every test of the project, on a fresh Debian machine.
#
#   ./scripts/test.sh
#
# Installs the Debian packages the tests need (scripts/install-deps.sh; root or sudo),
# checks formatting, lints and the committed header, starts a throwaway Dovecot and Postfix
# on loopback (tests/servers/servers.sh), then runs the Rust tests (unit, scripted peers,
# real servers, C API, reliability), the C programs' tests, the C API under valgrind and
# sanitizers, the manual pages, and the Python package's tests. Any failure
# stops it with a non-zero status; nothing is skipped. RD_PORT_BASE (default 10000) moves
# the servers' ports when another set already runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
scripts/install-deps.sh

step "format, lints"
cargo fmt --all -- --check
cargo clippy --all-targets --all-features -- -D warnings

step "build (release library for C and Python; the header is regenerated)"
cargo build --release
if git rev-parse --git-dir >/dev/null 2>&1; then
    git diff --exit-code -- include/ ||
        { echo "include/remote_directory.h differs from what build.rs generates: commit it" >&2; exit 1; }
fi

step "real servers"
servers=$(mktemp -d /tmp/remote-directory-servers.XXXXXX)
# The servers' directory (their logs) is kept when a step failed, and removed otherwise.
cleanup() {
    local rc=$?
    tests/servers/servers.sh stop "$servers" >/dev/null 2>&1 || true
    if ((rc == 0)); then
        rm -rf -- "$servers" "$servers.start.log"
    else
        echo "test.sh: the test servers' logs are kept in $servers" >&2
    fi
}
trap cleanup EXIT
tests/servers/servers.sh start "$servers" >/dev/null </dev/null 2>"$servers.start.log" ||
    { cat "$servers.start.log" >&2; exit 1; }
export RD_SERVERS_ENV="$servers/env"
cat "$RD_SERVERS_ENV"

step "Rust tests (unit, scripted peers, real servers, C API, reliability), rustls and native-tls"
cargo test --all-features

step "C programs, PAM module, checkpassword, policy service (against an installed copy)"
make -C "$root" test-c

step "manual pages (build, render without warnings, install, up to date)"
man/check.sh

step "C API under valgrind memcheck and ASan+UBSan (hostile input, 16-thread stress)"
bash tests/c/run.sh

step "Python package"
python/tests/run.sh

step "all tests passed"
