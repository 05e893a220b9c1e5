#!/usr/bin/env bash
# The benchmark of issue 5 (not a test): builds bench/ (rdbench), starts the real Dovecot
# and Postfix on loopback ports 60000+, runs every scenario at 1, 4 and 16 threads, stops
# the servers and writes BENCHMARKS.md (bench/BENCHMARKS.template.md with the tables).
#
#   bench/run.sh                  everything (about 6 minutes on 2 cores)
#   RD_BENCH_SECS=1 bench/run.sh  shorter runs (default 2 s of measurement per run)
#   bench/run.sh --only lib.rcpt --only floor      only scenarios whose id contains a word
#                                  (then the tables go to target/bench/partial.md, not BENCHMARKS.md)
#
# Needs root (the servers' masters), dovecot, postfix, python3 and cargo. Talks to
# 127.0.0.1 only. RD_PORT_BASE (default 60000) moves the servers' ports.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname -- "$0")/lib.sh"

SECS=${RD_BENCH_SECS:-2}
BASE=${RD_PORT_BASE:-60000}
bench_temp_dir rd-bench
OUT=$ROOT/BENCHMARKS.md
[[ $# -gt 0 ]] && OUT=$ROOT/target/bench/partial.md

bench_build
BIN=$ROOT/target/bench/release/rdbench
bench_start_servers "$DIR" "$BASE"

RESULTS=$DIR/results.md
{
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPU(s) ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)),"
    echo "Linux $(uname -r), $(dovecot --version 2>/dev/null | sed 's/ (.*//' | sed 's/^/Dovecot /'),"
    echo "Postfix $(postconf -h mail_version 2>/dev/null), $(rustc --version | cut -d' ' -f1-2), $(python3 --version),"
    echo "library at $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet -- src 2>/dev/null || echo ' + uncommitted changes in src/'),"
    echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
} >"$RESULTS.head"
"$BIN" all --env "$DIR/env" --out "$RESULTS" --secs "$SECS" --python "$ROOT/bench/usual.py" "$@"

if [[ $# -gt 0 ]]; then
    cat "$RESULTS.head" "$RESULTS" >"$OUT"
else
    awk -v head="$RESULTS.head" -v res="$RESULTS" '
        /^<!-- RESULTS -->$/ {
            while ((getline l < head) > 0) print l
            while ((getline l < res) > 0) print l
            next
        }
        { print }
    ' bench/BENCHMARKS.template.md >"$OUT"
fi
echo "bench/run.sh: wrote $OUT"
