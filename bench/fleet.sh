#!/usr/bin/env bash
# Issue 11's benchmark (not a test): failover across two servers, a fleet of 4 handles with
# and without a shared store, and the cost of a store hit. Builds rdbench, starts the real
# Dovecot/Postfix on loopback (RD_PORT_BASE, default 60000) and a redis-server on base+3790,
# prints the Markdown tables (BENCHMARKS.md, "Several servers and a fleet") and stops them.
#
#   bench/fleet.sh [--out FILE]
#
# Needs root (the servers' masters), dovecot, postfix, redis-server and cargo. Talks to
# 127.0.0.1 only; about 30 s.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname -- "$0")/lib.sh"

BASE=${RD_PORT_BASE:-60000}
bench_temp_dir rd-fleet
bench_build
bench_start_servers "$DIR" "$BASE"
echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg), library at $(git rev-parse --short HEAD 2>/dev/null)."
echo
# The store's down/back lines go to stderr; the tables to stdout.
target/bench/release/rdbench fleet --env "$DIR/env" "$@"
