#!/usr/bin/env bash
# The hostile-traffic benchmark of issue 8 (not a test): builds rdbench, starts the real
# Dovecot and Postfix on loopback (ports RD_PORT_BASE+, default 60000+), runs
# `rdbench hostile` (flood, phone, hot path; about 2.5 minutes) and writes its tables to
# target/bench/hostile.md. Copy them into bench/BENCHMARKS.template.md and BENCHMARKS.md
# ("Hostile traffic") by hand, with the date and the machine's load.
#
#   bench/hostile.sh                     everything, 20 s per flood/phone run
#   RD_BENCH_SECS=5 bench/hostile.sh     shorter runs
#   bench/hostile.sh --part hot          some scenarios only (flood, phone, hot)
#
# Needs root (the servers' masters), dovecot, postfix and cargo. Talks to 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd -P)
SECS=${RD_BENCH_SECS:-20}
BASE=${RD_PORT_BASE:-60000}
DIR=$(mktemp -d /tmp/rd-hostile.XXXXXX)
OUT=$ROOT/target/bench/hostile.md

cd "$ROOT"
cargo build --quiet --release --manifest-path bench/Cargo.toml --target-dir target/bench
stop() {
    tests/servers/servers.sh stop "$DIR" >/dev/null 2>&1 || true
    rm -rf -- "$DIR"
}
trap stop EXIT
RD_PORT_BASE=$BASE tests/servers/servers.sh start "$DIR" >/dev/null </dev/null
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
target/bench/release/rdbench hostile --env "$DIR/env" --secs "$SECS" --out "$OUT" "$@"
echo "bench/hostile.sh: wrote $OUT"
