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
# shellcheck source=bench/lib.sh
. "$(dirname -- "$0")/lib.sh"

SECS=${RD_BENCH_SECS:-20}
BASE=${RD_PORT_BASE:-60000}
bench_temp_dir rd-hostile
OUT=$ROOT/target/bench/hostile.md

bench_build
bench_start_servers "$DIR" "$BASE"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
target/bench/release/rdbench hostile --env "$DIR/env" --secs "$SECS" --out "$OUT" "$@"
echo "bench/hostile.sh: wrote $OUT"
