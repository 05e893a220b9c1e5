#!/usr/bin/env bash
# remote-directoryd's benchmark (issue 9; not a test): builds the daemon, directory-check and
# bench/ (rdbench-daemon), starts the real Dovecot and Postfix on loopback ports 61500+ (a
# base of its own, so it can run beside bench/run.sh), and prints the tables that go into
# BENCHMARKS.md, section "remote-directoryd".
#
#   bench/daemon.sh                          about two minutes on 2 cores
#   RD_BENCH_CALLS=20000 RD_BENCH_LOGINS=400 bench/daemon.sh
#
# Needs root (the servers' masters), dovecot, postfix and cargo. Talks to 127.0.0.1 only.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname -- "$0")/lib.sh"

BASE=${RD_PORT_BASE:-61500}
bench_temp_dir rd-bench-daemon
# The servers run as other users (nobody, postfix): they must reach it.
chmod 755 "$DIR"
make --no-print-directory -s programs >/dev/null
bench_build
bench_start_servers "$DIR/servers" "$BASE"
echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPU(s), library at $(git rev-parse --short HEAD 2>/dev/null),"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
target/bench/release/rdbench-daemon --env "$DIR/servers/env" --dir "$DIR/work" \
    --daemon target/release/remote-directoryd --directory-check c-examples/build/directory-check \
    --calls "${RD_BENCH_CALLS:-20000}" --logins "${RD_BENCH_LOGINS:-400}"
