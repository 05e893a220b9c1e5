# shellcheck shell=bash
# The prelude the benchmark scripts share; each sources it right after
# `set -euo pipefail`. It sets ROOT (the repository, made the working directory) and gives:
#
#   bench_temp_dir NAME            DIR: a fresh directory /tmp/NAME.XXXXXX
#   bench_build                    builds bench/ (rdbench, rdbench-daemon) into target/bench
#   bench_start_servers SUB BASE   starts the real Dovecot and Postfix (tests/servers/servers.sh)
#                                  in SUB on the port base BASE; at exit they are stopped and
#                                  DIR (which holds SUB) is removed

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

bench_temp_dir() {
    DIR=$(mktemp -d "/tmp/$1.XXXXXX")
}

bench_build() {
    cargo build --quiet --release --manifest-path bench/Cargo.toml --target-dir target/bench
}

bench_start_servers() {
    BENCH_SERVERS=$1
    trap bench_stop_servers EXIT
    RD_PORT_BASE=$2 tests/servers/servers.sh start "$BENCH_SERVERS" >/dev/null </dev/null
}

bench_stop_servers() {
    tests/servers/servers.sh stop "$BENCH_SERVERS" >/dev/null 2>&1 || true
    rm -rf -- "$DIR"
}
