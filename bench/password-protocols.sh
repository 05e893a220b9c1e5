#!/usr/bin/env bash
# SMTP AUTH through a real Postfix, three ways of checking the password against the same
# remote IMAP server (the test Dovecot), for BENCHMARKS.md ("Password protocols"):
#
#   daemon        smtpd_sasl_type = dovecot -> remote-directoryd (daemon.dovecot-auth)
#   daemon+cache  the same with cache.auth-ttl = "1h" (repeated logins of one user)
#   dovecot-imap  smtpd_sasl_type = dovecot -> Dovecot auth, passdb imap (what users run today)
#   saslauthd     smtpd_sasl_type = cyrus -> saslauthd -a rimap (LOGIN in clear, no TLS)
#
# Each at 1 and 8 concurrent SMTP clients (bench/smtp_auth_load.py: whole sessions of
# connect, EHLO, AUTH PLAIN, QUIT), SECS seconds each; prints a Markdown table.
#
#   bench/password-protocols.sh [SECS]      (root: starts Dovecot and Postfix; default 5 s)
#
# Ports: RD_PORT_BASE=61000 (in the benchmarks' range, clear of bench/run.sh's 60000),
# everything on 127.0.0.1. The daemon and
# the Dovecot remote both use TLS (STARTTLS, verified); saslauthd's rimap cannot.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname -- "$0")/lib.sh"
root=$ROOT
secs=${1:-5}
export RD_PORT_BASE=${RD_PORT_BASE:-61000}

cargo build --release -q -p remote-directoryd
daemon_bin=$root/target/release/remote-directoryd

dir=$(mktemp -d /tmp/rd-bench-pw.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    tests/servers/servers.sh stop "$dir/servers" >/dev/null 2>&1 || true
    rm -rf -- "$dir"
}
trap cleanup EXIT
tests/servers/servers.sh start "$dir/servers" >/dev/null </dev/null 2>"$dir/servers.log" ||
    { cat "$dir/servers.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$dir/servers/env"
sockets=$RD_DAEMON_SOCKETS

# Waits until the Unix socket $1 accepts connections.
wait_socket() {
    for _ in $(seq 200); do
        python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" "$1" \
            2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

stop_last() {
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
    unset 'pids[-1]'
    rm -f "$sockets/dovecot-auth" "$sockets/saslauthd"
}

start_daemon() {
    cat >"$dir/daemon.toml" <<EOF
[directory.imap]
type = "imap"
address = "localhost"
port = $RD_IMAP_PORT
tls.ca-file = "$RD_CA"
pool.max-connections = 16
$1

[daemon]
socket-mode = "0666"
max-clients = 64
dovecot-auth.socket = "$sockets/dovecot-auth"
EOF
    "$daemon_bin" -c "$dir/daemon.toml" 2>"$dir/daemon.log" &
    pids+=($!)
    wait_socket "$sockets/dovecot-auth"
}

start_dovecot_imap_passdb() {
    mkdir -p "$dir/dovecot-auth"
    cat >"$dir/dovecot-auth.conf" <<EOF
protocols =
base_dir = $dir/dovecot-auth
state_dir = $dir/dovecot-auth
instance_name = rd-bench-auth
log_path = $dir/dovecot-auth.log
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {
  driver = imap
  args = host=localhost port=$RD_IMAP_PORT ssl=starttls ssl_ca_file=$RD_CA
}
service auth {
  unix_listener $sockets/dovecot-auth {
    mode = 0666
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
    dovecot -F -c "$dir/dovecot-auth.conf" &
    pids+=($!)
    wait_socket "$sockets/dovecot-auth"
}

start_saslauthd_rimap() {
    mkdir -p "$dir/saslauthd"
    # In a process group of its own: at SIGTERM saslauthd signals its whole group (its
    # workers), which would otherwise be this script too.
    setsid saslauthd -d -a rimap -O "127.0.0.1/$RD_IMAP_PORT" -m "$dir/saslauthd" -n 8 \
        >"$dir/saslauthd.log" 2>&1 &
    pids+=($!)
    wait_socket "$dir/saslauthd/mux"
    ln -sf "$dir/saslauthd/mux" "$sockets/saslauthd"
}

row() {
    local what=$1 port=$2 t out
    for t in 1 8; do
        out=$(python3 bench/smtp_auth_load.py "$port" alice@example.org alice-pass-1 "$t" "$secs")
        # logins=N per_s=R median_ms=M p90_ms=P failures=F
        eval "$(echo "$out" | tr ' ' '\n' | sed 's/^/local /')"
        # shellcheck disable=SC2154  # set by the eval above
        printf '| %s | %s | %s | %s | %s | %s |\n' "$what" "$t" "$per_s" "$median_ms" "$p90_ms" "$failures"
    done
}

echo "| path | clients | logins/s | median ms | p90 ms | failures |"
echo "|---|---|---|---|---|---|"
start_daemon ""
row "Postfix -> remote-directoryd (dovecot-auth) -> IMAP+STARTTLS" "$RD_DAEMON_SASL_SMTP_PORT"
stop_last
start_daemon 'cache.auth-ttl = "1h"'
row "the same, cache.auth-ttl = 1h (repeated logins)" "$RD_DAEMON_SASL_SMTP_PORT"
stop_last
start_dovecot_imap_passdb
row "Postfix -> Dovecot SASL, passdb imap -> IMAP+STARTTLS" "$RD_DAEMON_SASL_SMTP_PORT"
stop_last
start_saslauthd_rimap
row "Postfix -> Cyrus SASL -> saslauthd -a rimap -> IMAP (no TLS)" "$RD_CYRUS_SMTP_PORT"
stop_last
