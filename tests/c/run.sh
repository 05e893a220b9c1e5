#!/usr/bin/env bash
# tests/c/run.sh -- the C API under valgrind and the sanitizers.
#
#   tests/servers/servers.sh start /tmp/rd-servers >/dev/null && export RD_SERVERS_ENV=/tmp/rd-servers/env
#   bash tests/c/run.sh
#
# Builds the release library (cargo build --release), then three programs against
# target/release/libremote_directory.so and include/remote_directory.h:
#   hostile  tests/c/hostile.c   NULL, bad bytes, injection, over-long values: nothing sent
#   stress   tests/c/stress.c    threads sharing one handle per directory, real servers
#   example  c-examples/example.c  the documented example, real servers
# and runs each plainly, under valgrind memcheck (no error, no definite or possible leak:
# --error-exitcode, --leak-check=full) and once built with -fsanitize=address,undefined.
# One line per check, then "N passed, M failed"; exits non-zero on any failure. Never
# skips: a missing tool or server is a failure. RD_C_KEEP=1 keeps the build directory.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$HERE/../.." && pwd -P)
STRESS_THREADS=${RD_C_STRESS_THREADS:-16}
STRESS_ROUNDS=${RD_C_STRESS_ROUNDS:-20}

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    [[ -z "${2:-}" ]] || sed 's/^/       /' "$2" | tail -40
}
die() {
    echo "run.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

[[ -n "${RD_SERVERS_ENV:-}" && -r "${RD_SERVERS_ENV:-}" ]] ||
    die "RD_SERVERS_ENV is not set or not readable. Start the test servers first:
    tests/servers/servers.sh start /tmp/rd-servers >/dev/null && export RD_SERVERS_ENV=/tmp/rd-servers/env"
# shellcheck disable=SC1090
. "$RD_SERVERS_ENV"
for v in RD_CA RD_IMAP_PORT RD_LMTP_PORT; do
    [[ -n "${!v:-}" ]] || die "$RD_SERVERS_ENV does not define $v"
done
for tool in cc cargo valgrind; do
    command -v "$tool" >/dev/null || die "'$tool' not found (Debian: gcc valgrind; cargo from rustup)"
done

build=$(mktemp -d /tmp/rd-c-tests.XXXXXX)
cleanup() { [[ -n "${RD_C_KEEP:-}" ]] || rm -rf -- "$build"; }
trap cleanup EXIT

echo "# building the release library"
(cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
LIB=$ROOT/target/release
[[ -e "$LIB/libremote_directory.so" ]] || die "$LIB/libremote_directory.so missing after the build"
# The library's SONAME is libremote_directory.so.0 (what an installed copy provides): a
# private copy under that name, found through the programs' rpath.
mkdir -p "$build/lib"
cp "$LIB/libremote_directory.so" "$build/lib/"
soname=$(readelf -d "$build/lib/libremote_directory.so" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ -n "$soname" ]] || soname=libremote_directory.so.0
[[ "$soname" == libremote_directory.so ]] || ln -sf libremote_directory.so "$build/lib/$soname"

cat >"$build/dirs.toml" <<EOF
[directory.imap]
type = "imap"
address = "localhost"
port = $RD_IMAP_PORT
timeout = "20s"
tls.ca-file = "$RD_CA"
lookup.domains = ["example.org"]
pool.max-connections = 4

[directory.lmtp]
type = "lmtp"
address = "localhost"
port = $RD_LMTP_PORT
timeout = "20s"
tls.ca-file = "$RD_CA"
lookup.domains = ["example.org"]
pool.max-connections = 4
limits.rcpt = 100
EOF

CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -g -O1 -I"$ROOT/include")
LDFLAGS=(-L"$build/lib" -lremote_directory -Wl,-rpath,"$build/lib" -lpthread)
SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
programs=(hostile stress example)
source_of() {
    case $1 in
        example) echo "$ROOT/c-examples/example.c" ;;
        *) echo "$HERE/$1.c" ;;
    esac
}
for p in "${programs[@]}"; do
    src=$(source_of "$p")
    if cc "${CFLAGS[@]}" -o "$build/$p" "$src" "${LDFLAGS[@]}" >"$build/$p.cc.log" 2>&1; then
        ok "build $p"
    else
        fail "build $p" "$build/$p.cc.log"
    fi
    if cc "${CFLAGS[@]}" "${SAN[@]}" -o "$build/$p-san" "$src" "${LDFLAGS[@]}" >"$build/$p-san.cc.log" 2>&1; then
        ok "build $p with -fsanitize=address,undefined"
    else
        fail "build $p with -fsanitize=address,undefined" "$build/$p-san.cc.log"
    fi
done

# The arguments of each program.
args_of() {
    case $1 in
        hostile) ;;
        stress) echo "$build/dirs.toml $STRESS_THREADS $STRESS_ROUNDS" ;;
        example)
            echo "$build/dirs.toml imap" \
                "auth alice@example.org alice-pass-1 OK" \
                "auth alice@example.org wrong-password REJECTED" \
                "domain example.org OK domain example.net REJECTED" \
                "use lmtp rcpt alice@example.org OK rcpt nosuchuser@example.org REJECTED"
            ;;
    esac
}

# valgrind: every error and every definite or possible leak fails the run. What is
# "still reachable" at exit is not a leak (process-wide state such as std's stdout buffer).
# tests/c/valgrind.supp suppresses the two reports that memcheck makes about ring's
# assembly-computed TLS hashes (see the file: they point into ring and rustls only).
VALGRIND=(valgrind --quiet --error-exitcode=99 --leak-check=full --suppressions="$HERE/valgrind.supp"
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible
    --track-origins=yes --fair-sched=yes)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=98
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_check() {
    local name=$1 log=$2
    shift 2
    local start=$SECONDS
    if "$@" >"$log" 2>&1; then
        ok "$name ($((SECONDS - start)) s)"
    else
        fail "$name: exit $? ($((SECONDS - start)) s)" "$log"
    fi
}

for p in "${programs[@]}"; do
    [[ -x "$build/$p" ]] || continue
    # The example's arguments contain shell quoting for a control byte: evaluate them.
    eval "set -- $(args_of "$p")"
    run_check "$p" "$build/$p.log" "$build/$p" "$@"
    run_check "$p under valgrind memcheck" "$build/$p.vg.log" "${VALGRIND[@]}" "$build/$p" "$@"
    if [[ -x "$build/$p-san" ]]; then
        run_check "$p with ASan+UBSan" "$build/$p.san.log" "$build/$p-san" "$@"
    fi
done

echo "$passed passed, $failed failed"
((failed == 0))
