#!/usr/bin/env bash
# Throwaway Dovecot + Postfix for remote-directory's real-server tests.
#
#   tests/servers/servers.sh start  DIR   generate everything under DIR, start, wait, write DIR/env
#   tests/servers/servers.sh stop   DIR   stop both instances, remove DIR/env (safe to repeat)
#   tests/servers/servers.sh status DIR   say what runs and which ports answer
#
# Everything lives under DIR: configuration, TLS material, run/state directories, Postfix
# queue, mail store and logs (DIR/log/dovecot.log, DIR/log/postfix.log).  Nothing under
# /etc/dovecot, /etc/postfix, /run/dovecot or /var/spool/postfix is read for settings or
# written, and nothing listens on any address but 127.0.0.1.
#
# Ports (tests/servers/README.md) are RD_PORT_BASE + fixed offsets; RD_PORT_BASE defaults to
# 10000, which gives the conventional ports.  Set it (e.g. 20000) to run a second set:
#   IMAP +143  IMAPS +993  LMTP +24  submission +587  submissions +465
#   Postfix SMTP +25  Postfix SMTP with policy check +27  policy service +40 (not started)
#   Postfix SMTP whose policy service is spawn(8) running policy-remote-directory +41
#     (program and remote-directoryd's socket in DIR/policy-spawn/, put there by the tests)
#   Postfix SMTP relaying example.org, recipients checked by socketmap +28
#     (socket DIR/socketmap/socket, map name "rcpt"; nothing listens by default)
#   Dovecot auth (SASL for Postfix) +30
#   Postfix SMTP asking remote-directoryd (password protocols, issue 10): Dovecot SASL +3525,
#   the same for SASL service "down" +3526, Cyrus SASL (saslauthd protocol) +3527, "down" +3528
# RD_START_TIMEOUT (seconds, default 20) bounds how long `start` waits for the greetings.
#
# Must run as root: Postfix's master and Dovecot's master need it (privilege separation).
set -euo pipefail

PROG=servers.sh
DOMAIN=example.org
# The test users, exactly as in tests/servers/README.md.  Bob's password holds a double
# quote, a backslash, a space and a non-ASCII letter (UTF-8) on purpose; single quotes
# keep every byte as written.
ALICE_PASS='alice-pass-1'
BOB_PASS='p"a\ss wörd'

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------
# paths and ports

set_paths() {
    # DIR ends up in config files of two different syntaxes and in the shell-sourceable
    # env file; refuse characters that would need quoting in any of them (checked before
    # anything is created, and again on the resolved path below).
    [[ "$1" =~ ^[A-Za-z0-9._/+-]+$ ]] ||
        die "DIR '$1' must consist of letters, digits and . _ / + - only"
    # Absolute, because both servers resolve relative paths against their own cwd.  Only
    # `start` creates DIR; stop/status on a missing DIR have nothing to act on.
    if [[ "$cmd" == start ]]; then
        mkdir -p -- "$1"
    elif [[ ! -d "$1" ]]; then
        echo "$PROG: $1 does not exist: nothing runs from there"
        [[ "$cmd" == stop ]] && exit 0
        exit 1
    fi
    DIR=$(cd -- "$1" && pwd -P)
    [[ "$DIR" =~ ^[A-Za-z0-9._/+-]+$ ]] ||
        die "DIR '$DIR' must consist of letters, digits and . _ / + - only"
    # Dovecot creates unix sockets under DIR/run/dovecot (e.g. login/imap-urlauth-postlogin);
    # sun_path holds 107 bytes.
    ((${#DIR} <= 64)) || die "DIR '$DIR' is too long (${#DIR} > 64 chars) for Dovecot's unix sockets"
    LOG=$DIR/log
    TLS=$DIR/tls
    DCONF_DIR=$DIR/dovecot
    DCONF=$DCONF_DIR/dovecot.conf
    DRUN=$DIR/run/dovecot
    DSTATE=$DIR/state/dovecot
    MAIL=$DIR/mail
    PCONF=$DIR/postfix
    # Where the tests of remote-directoryd's password protocols put the daemon's sockets;
    # the smtpd services of daemon_sasl_services connect there lazily, at the first AUTH.
    DAEMON_SOCKETS=$DIR/daemon
    PQUEUE=$DIR/postfix-queue
    PDATA=$DIR/postfix-data
    DOVECOT_PID=$DRUN/master.pid
    POSTFIX_PID=$PQUEUE/pid/master.pid
    ENV_FILE=$DIR/env
}

set_ports() {
    local base=${RD_PORT_BASE:-10000}
    if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1024 || base + 3999 > 65535)); then
        die "RD_PORT_BASE='$base' must be a number from 1024 to $((65535 - 3999))"
    fi
    IMAP_PORT=$((base + 143))
    IMAPS_PORT=$((base + 993))
    LMTP_PORT=$((base + 24))
    SUBMISSION_PORT=$((base + 587))
    SUBMISSIONS_PORT=$((base + 465))
    SMTP_PORT=$((base + 25))
    POLICY_SMTP_PORT=$((base + 27))
    POLICY_PORT=$((base + 40))
    POLICY_SPAWN_SMTP_PORT=$((base + 41))
    SOCKETMAP_SMTP_PORT=$((base + 28))
    SASL_PORT=$((base + 30))
    DAEMON_SASL_SMTP_PORT=$((base + 3525))
    DAEMON_SASL_DOWN_SMTP_PORT=$((base + 3526))
    CYRUS_SMTP_PORT=$((base + 3527))
    CYRUS_DOWN_SMTP_PORT=$((base + 3528))
}

# "name port" pairs of everything `start` must see listening (the policy port is not one,
# nor the smtpd services of daemon_sasl_services: their smtpd exits at the first connection
# while no remote-directoryd listens, and master then holds the service back for a minute).
port_list() {
    cat <<EOF
RD_IMAP_PORT $IMAP_PORT
RD_IMAPS_PORT $IMAPS_PORT
RD_LMTP_PORT $LMTP_PORT
RD_SUBMISSION_PORT $SUBMISSION_PORT
RD_SUBMISSIONS_PORT $SUBMISSIONS_PORT
RD_SMTP_PORT $SMTP_PORT
RD_POLICY_SMTP_PORT $POLICY_SMTP_PORT
RD_POLICY_SPAWN_SMTP_PORT $POLICY_SPAWN_SMTP_PORT
RD_SOCKETMAP_SMTP_PORT $SOCKETMAP_SMTP_PORT
RD_SASL_PORT $SASL_PORT
EOF
}

# True when something listens on TCP port $1 (any local address: a wildcard listener
# would also steal our 127.0.0.1 connections).
port_in_use() {
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]]
    else
        # No iproute2: a connect that succeeds means a listener.
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# ---------------------------------------------------------------------------------------
# processes, by pid file only

# pid from pid file $1 if that process is alive, its command is $2 and its working
# directory is $3: both masters chdir to their own directory under DIR, so a recycled pid,
# or the master of another instance, is never taken for ours.  Empty otherwise.
live_pid() {
    local file=$1 comm=$2 cwd=$3 pid
    [[ -r "$file" ]] || return 0
    pid=$(tr -dc '0-9' <"$file" | head -c 10)
    [[ -n "$pid" && -d /proc/$pid ]] || return 0
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 0
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$cwd" ]] || return 0
    echo "$pid"
}

dovecot_pid() { live_pid "$DOVECOT_PID" dovecot "$DRUN"; }
postfix_pid() { live_pid "$POSTFIX_PID" master "$PQUEUE"; }

# SIGTERM to both masters at once, then wait.  Each takes its children down: Postfix at
# once, Dovecot within ~1-6 s (it waits up to 5 s for its processes to go, plus 1 s).
# SIGKILL after 15 s as a last resort.
cmd_stop() {
    local dpid ppid i
    dpid=$(dovecot_pid)
    ppid=$(postfix_pid)
    [[ -n "$dpid" ]] || echo "$PROG: Dovecot not running in $DIR"
    [[ -n "$ppid" ]] || echo "$PROG: Postfix not running in $DIR"
    for i in $dpid $ppid; do kill -TERM "$i" 2>/dev/null || true; done
    for ((i = 0; i < 150; i++)); do
        [[ -n "$dpid" && -d /proc/$dpid ]] || [[ -n "$ppid" && -d /proc/$ppid ]] || break
        sleep 0.1
    done
    for i in $dpid $ppid; do
        if [[ -d /proc/$i ]]; then
            echo "$PROG: pid $i ignored SIGTERM for 15 s; sending SIGKILL" >&2
            kill -KILL "$i" 2>/dev/null || true
        fi
    done
    [[ -z "$dpid" ]] || echo "$PROG: stopped Dovecot (pid $dpid)"
    [[ -z "$ppid" ]] || echo "$PROG: stopped Postfix (pid $ppid)"
    # DIR/env stands for "servers running": without it a test says how to start them
    # instead of failing on refused connections.
    rm -f -- "$ENV_FILE"
}

# ---------------------------------------------------------------------------------------
# generation

gen_tls() {
    # A fresh CA and server certificate on every start: cheap with P-256 (a few ms) and
    # never stale.  Extensions are spelled out in our own openssl config so the result does
    # not depend on the system's openssl.cnf; strict verifiers (webpki/rustls) want
    # CA:TRUE + keyCertSign on the CA and CA:FALSE + serverAuth + SAN on the leaf.
    rm -rf -- "$TLS"
    mkdir -p -- "$TLS"
    cat >"$TLS/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    (
        umask 077
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/ca.key"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/server.key"
    ) 2>/dev/null
    openssl req -new -x509 -config "$TLS/openssl.cnf" -extensions v3_ca -days 3650 \
        -key "$TLS/ca.key" -subj "/O=remote-directory tests/CN=remote-directory test CA" \
        -out "$TLS/ca.pem"
    openssl req -new -config "$TLS/openssl.cnf" -key "$TLS/server.key" \
        -subj "/O=remote-directory tests/CN=localhost" -out "$TLS/server.csr"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
        -extfile "$TLS/openssl.cnf" -extensions v3_server -out "$TLS/server.pem" 2>/dev/null
    openssl verify -CAfile "$TLS/ca.pem" "$TLS/server.pem" >/dev/null ||
        die "generated server certificate does not verify against the generated CA"
    chmod 644 "$TLS/ca.pem" "$TLS/server.pem"
}

gen_users() {
    # passwd-file: user:{SCHEME}hash:uid:gid:gecos:home:shell:extra.  uid/gid/home come
    # from the config (mail_uid, userdb default_fields), so those fields stay empty.
    # openssl passwd -stdin reads one line and drops only its newline, so every byte of
    # the password (quote, backslash, space, UTF-8) is hashed as is.
    local user pass hash
    : >"$DCONF_DIR/users.new"
    for user in alice bob; do
        if [[ $user == alice ]]; then pass=$ALICE_PASS; else pass=$BOB_PASS; fi
        hash=$(printf '%s\n' "$pass" | openssl passwd -6 -stdin)
        printf '%s@%s:{SHA512-CRYPT}%s::::::\n' "$user" "$DOMAIN" "$hash" >>"$DCONF_DIR/users.new"
        # Let Dovecot itself confirm the hash matches the exact bytes.
        doveadm -c "$DCONF" pw -t "{SHA512-CRYPT}$hash" -p "$pass" >/dev/null ||
            die "doveadm does not accept the generated hash for $user"
    done
    # Readable by Dovecot's auth process (runs as user dovecot), not by everyone.
    chgrp dovecot "$DCONF_DIR/users.new"
    chmod 640 "$DCONF_DIR/users.new"
    mv -f "$DCONF_DIR/users.new" "$DCONF_DIR/users"
}

gen_dovecot_conf() {
    local dh=""
    # DH parameters only matter for DHE suites (ECDHE needs none); use Debian's if present.
    [[ -r /usr/share/dovecot/dh.pem ]] && dh="ssl_dh = </usr/share/dovecot/dh.pem"
    cat >"$DCONF" <<EOF
# Generated by tests/servers/servers.sh: a throwaway Dovecot for remote-directory's tests.
# Self-contained: nothing from /etc/dovecot is included.
protocols = imap lmtp submission
listen = 127.0.0.1
base_dir = $DRUN
state_dir = $DSTATE
instance_name = rd-test
hostname = localhost
log_path = $LOG/dovecot.log
info_log_path = $LOG/dovecot.log
auth_verbose = yes
# The tests' relay may name its clients (IMAP ID x-originating-ip, submission XCLIENT):
# forward.client-ip is tested against this.
login_trusted_networks = 127.0.0.0/8

ssl = yes
ssl_cert = <$TLS/server.pem
ssl_key = <$TLS/server.key
$dh

# Answer wrong passwords without the default 2 s delay (Dovecot still answers failures
# on its ~500 ms auth-failure timer).
auth_failure_delay = 0
auth_mechanisms = plain login
# Bare "alice" means alice@example.org (as on the servers measured in shared notes).
auth_default_realm = $DOMAIN
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $DCONF_DIR/users
}
userdb {
  driver = passwd-file
  args = $DCONF_DIR/users
  default_fields = home=$MAIL/%d/%n
}
# Mail processes run as nobody: no dedicated system user needs to exist.
mail_uid = nobody
mail_gid = nogroup
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
}

# Dovecot 2.3 has no setting to turn the per-IP auth penalty off.  The auth process keeps
# it in anvil through the "anvil-auth-penalty" socket and disables the penalty, silently,
# when that socket does not exist.  A listener with mode 0 is not created by the master.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $SUBMISSION_PORT
  }
  inet_listener submissions {
    address = 127.0.0.1
    port = $SUBMISSIONS_PORT
    ssl = yes
  }
}
# SASL for Postfix (smtpd_sasl_type = dovecot).  The listener name decides the socket
# type: anything not ending in -login/-master/-userdb/-token is a plain auth client.
service auth {
  inet_listener sasl {
    address = 127.0.0.1
    port = $SASL_PORT
  }
}

# Submission relays to this test's Postfix, in clear (loopback).
submission_relay_host = 127.0.0.1
submission_relay_port = $SMTP_PORT
submission_relay_ssl = no
EOF
}

gen_postfix_conf() {
    mkdir -p -- "$PCONF"
    # Where the socketmap tests put remote-directoryd's socket; smtpd (user postfix) reaches it.
    mkdir -p -m 0755 -- "$DIR/socketmap"
    # Where the tests put policy-remote-directory, run by spawn(8) as nobody, and the policy
    # socket of their remote-directoryd.
    mkdir -p -m 0755 -- "$DIR/policy-spawn"
    printf 'alice@%s OK\nbob@%s OK\n' "$DOMAIN" "$DOMAIN" >"$PCONF/vmailbox"
    cat >"$PCONF/main.cf" <<EOF
# Generated by tests/servers/servers.sh: a throwaway Postfix for remote-directory's tests.
# Started with \`postfix -c $PCONF\`; the system instance in /etc/postfix is not involved.
compatibility_level = 3.6
queue_directory = $PQUEUE
data_directory = $PDATA
# Log to a file of our own (Postfix 3.4+, through the postlog service), not syslog.
maillog_file = $LOG/postfix.log
maillog_file_prefixes = $LOG

myhostname = localhost
mydomain = localdomain
myorigin = \$myhostname
smtpd_banner = \$myhostname ESMTP \$mail_name
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
biff = no
append_dot_mydomain = no

# No local delivery, no relaying, no outbound mail: only example.org, via Dovecot LMTP.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
relayhost =
mynetworks = 127.0.0.1/32
local_transport = error:5.1.1 local delivery is disabled in this test instance
default_transport = error:5.7.1 outbound mail is disabled in this test instance
relay_transport = error:5.7.1 relaying is disabled in this test instance
virtual_mailbox_domains = $DOMAIN
# texthash: read at process start, no postmap step.  Unknown users get 550 5.1.1.
virtual_mailbox_maps = texthash:$PCONF/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT

# The default 1 s flow control delays the first accepted RCPT after ~100 aborted
# transactions (see shared notes); tests do many of those.
in_flow_delay = 0s

smtpd_tls_security_level = may
smtpd_tls_chain_files = $TLS/server.key, $TLS/server.pem
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:$SASL_PORT
# permit_mynetworks is deliberately absent: loopback clients must not relay.
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
# The tests' relay may name its clients with XCLIENT (forward.client-ip).
smtpd_authorized_xclient_hosts = 127.0.0.0/8

# For the smtpd on the policy port (master.cf): ask a policy service before accepting a
# recipient.  One try and short timeouts, so "nobody listens" is a quick 451 4.3.5
# (smtpd_policy_service_default_action).
rd_policy_recipient_restrictions = check_policy_service inet:127.0.0.1:$POLICY_PORT
smtpd_policy_service_try_limit = 1
smtpd_policy_service_timeout = 5s
# For the smtpd on the spawn(8) policy port (master.cf): the policy service is spawn(8)
# running policy-remote-directory (service rdpolicy), which relays to remote-directoryd.
rd_spawn_policy_recipient_restrictions = check_policy_service unix:private/rdpolicy
rdpolicy_time_limit = 3600s

# For the smtpd on the socketmap port (master.cf): example.org is a relay domain there (a
# backup MX), its recipients checked by relay_recipient_maps through a socketmap server
# (remote-directoryd, started by the tests that need it).  The address class comes from
# the trivial-rewrite service, so that smtpd has one of its own with the same view.
rd_socketmap_recipients = socketmap:unix:$DIR/socketmap/socket:rcpt
EOF
    # chroot column "n" everywhere: nothing to copy into a jail, and the queue directory
    # is ours.  postlog is required by maillog_file.
    cat >"$PCONF/master.cf" <<EOF
# Generated by tests/servers/servers.sh.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$POLICY_SMTP_PORT inet n - n - - smtpd
  -o smtpd_recipient_restrictions=\$rd_policy_recipient_restrictions
127.0.0.1:$POLICY_SPAWN_SMTP_PORT inet n - n - - smtpd
  -o smtpd_recipient_restrictions=\$rd_spawn_policy_recipient_restrictions
rdpolicy unix - n n - 0 spawn
  user=nobody argv=$DIR/policy-spawn/policy-remote-directory -s $DIR/policy-spawn/policy
$(daemon_sasl_services)
127.0.0.1:$SOCKETMAP_SMTP_PORT inet n - n - - smtpd
  -o virtual_mailbox_domains= -o relay_domains=$DOMAIN
  -o relay_recipient_maps=\$rd_socketmap_recipients -o rewrite_service_name=rewrite-relay
rewrite-relay unix -    -       n       -       -       trivial-rewrite
  -o virtual_mailbox_domains= -o relay_domains=$DOMAIN
  -o relay_transport=lmtp:inet:127.0.0.1:$LMTP_PORT
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    gen_cyrus_sasl_conf
    # Postfix will not read a table or main.cf that changed less than ~2 s ago: it pauses
    # ("let it settle down") until the file is older, which cost every start 2 s and every
    # new smtpd process as much.  Files we just wrote are complete, so date them back.
    touch -d "@$(($(date +%s) - 60))" "$PCONF/main.cf" "$PCONF/master.cf" "$PCONF/vmailbox"
}

# smtpd services whose SASL is remote-directoryd (issue 10): AUTH in plain text on loopback
# (no STARTTLS needed), Dovecot's protocol at DAEMON_SOCKETS/dovecot-auth, Cyrus SASL with
# pwcheck_method saslauthd at DAEMON_SOCKETS/saslauthd. The "down" twins name the SASL
# service "down", which the tests map to a directory whose server does not answer.
daemon_sasl_services() {
    local common="-o smtpd_tls_auth_only=no -o smtpd_sasl_auth_enable=yes"
    local dovecot="-o smtpd_sasl_type=dovecot -o smtpd_sasl_path=$DAEMON_SOCKETS/dovecot-auth"
    local cyrus="-o smtpd_sasl_type=cyrus -o smtpd_sasl_path=smtpd -o cyrus_sasl_config_path=$PCONF/sasl"
    cat <<EOF
127.0.0.1:$DAEMON_SASL_SMTP_PORT inet n - n - - smtpd $common $dovecot
127.0.0.1:$DAEMON_SASL_DOWN_SMTP_PORT inet n - n - - smtpd $common $dovecot
  -o smtpd_sasl_service=down
127.0.0.1:$CYRUS_SMTP_PORT inet n - n - - smtpd $common $cyrus
127.0.0.1:$CYRUS_DOWN_SMTP_PORT inet n - n - - smtpd $common $cyrus
  -o smtpd_sasl_service=down
EOF
}

# Cyrus SASL's configuration of the smtpd application (cyrus_sasl_config_path above).
gen_cyrus_sasl_conf() {
    mkdir -p -- "$PCONF/sasl" "$DAEMON_SOCKETS"
    chmod 755 "$DAEMON_SOCKETS"
    cat >"$PCONF/sasl/smtpd.conf" <<EOF
pwcheck_method: saslauthd
saslauthd_path: $DAEMON_SOCKETS/saslauthd
mech_list: PLAIN LOGIN
EOF
}

write_env() {
    cat >"$ENV_FILE.new" <<EOF
RD_CA=$TLS/ca.pem
RD_IMAP_PORT=$IMAP_PORT
RD_IMAPS_PORT=$IMAPS_PORT
RD_LMTP_PORT=$LMTP_PORT
RD_SUBMISSION_PORT=$SUBMISSION_PORT
RD_SUBMISSIONS_PORT=$SUBMISSIONS_PORT
RD_SMTP_PORT=$SMTP_PORT
RD_POLICY_SMTP_PORT=$POLICY_SMTP_PORT
RD_POLICY_PORT=$POLICY_PORT
RD_POLICY_SPAWN_SMTP_PORT=$POLICY_SPAWN_SMTP_PORT
RD_POLICY_SPAWN_DIR=$DIR/policy-spawn
RD_SOCKETMAP_SMTP_PORT=$SOCKETMAP_SMTP_PORT
RD_SOCKETMAP_SOCKET=$DIR/socketmap/socket
RD_SASL_PORT=$SASL_PORT
RD_DIR=$DIR
RD_DAEMON_SASL_SMTP_PORT=$DAEMON_SASL_SMTP_PORT
RD_DAEMON_SASL_DOWN_SMTP_PORT=$DAEMON_SASL_DOWN_SMTP_PORT
RD_CYRUS_SMTP_PORT=$CYRUS_SMTP_PORT
RD_CYRUS_DOWN_SMTP_PORT=$CYRUS_DOWN_SMTP_PORT
RD_DAEMON_SOCKETS=$DAEMON_SOCKETS
EOF
    mv -f "$ENV_FILE.new" "$ENV_FILE"
}

# ---------------------------------------------------------------------------------------
# readiness

# Connects to every port and waits for its greeting: "* OK" (IMAP), "220" (SMTP, LMTP,
# submission), "VERSION" (Dovecot auth); the implicit-TLS ports through a TLS handshake
# verified against the test CA for "localhost".  Python stdlib only.
wait_ready() {
    # The script comes on stdin, so the port list goes in as arguments.
    # shellcheck disable=SC2046  # word splitting of "name port" pairs is wanted
    python3 - "$TLS/ca.pem" "${RD_START_TIMEOUT:-20}" $(port_list) <<'EOF'
import socket, ssl, sys, time

ca, timeout = sys.argv[1], float(sys.argv[2])
ports = list(zip(sys.argv[3::2], sys.argv[4::2]))
ctx = ssl.create_default_context(cafile=ca)
want = {"RD_IMAP_PORT": b"* OK", "RD_IMAPS_PORT": b"* OK", "RD_SASL_PORT": b"VERSION"}
bye = {"RD_IMAP_PORT": b"a LOGOUT\r\n", "RD_IMAPS_PORT": b"a LOGOUT\r\n", "RD_SASL_PORT": b""}
tls = {"RD_IMAPS_PORT", "RD_SUBMISSIONS_PORT"}
deadline = time.monotonic() + timeout

def probe(name, port):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        s = ctx.wrap_socket(raw, server_hostname="localhost") if name in tls else raw
        f = s.makefile("rb")
        line = f.readline()
        if not line.startswith(want.get(name, b"220")):
            raise OSError("unexpected greeting %r" % line)
        s.sendall(bye.get(name, b"QUIT\r\n"))
        return line

pending = list(ports)
while pending:
    name, port = pending[0]
    try:
        line = probe(name, int(port))
        print("  %-20s %5s  %s" % (name, port, line.decode("utf-8", "replace").strip()))
        pending.pop(0)
    except (OSError, ssl.SSLError) as e:
        if time.monotonic() > deadline:
            print("not ready after %gs: %s %s: %s" % (timeout, name, port, e), file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)
EOF
}

log_tails() {
    local f
    for f in "$LOG/dovecot.log" "$LOG/postfix.log"; do
        [[ -s "$f" ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 30 "$f" >&2
    done
}

# ---------------------------------------------------------------------------------------
# start

cmd_start() {
    local t0 pid name port busy=()
    t0=$(date +%s%N)

    ((EUID == 0)) || die "must run as root (Postfix's and Dovecot's master processes need it)"
    for name in dovecot doveadm doveconf postfix postconf openssl python3; do
        command -v "$name" >/dev/null 2>&1 ||
            die "'$name' not found; run scripts/install-deps.sh"
    done
    getent passwd dovecot dovenull postfix nobody >/dev/null ||
        die "system users dovecot, dovenull, postfix and nobody must exist (installed with the packages)"
    getent group nogroup postdrop dovecot >/dev/null || die "groups nogroup, postdrop and dovecot must exist"

    pid=$(dovecot_pid)
    [[ -z "$pid" ]] || die "Dovecot already runs from $DIR (pid $pid); run '$0 stop $DIR' first"
    pid=$(postfix_pid)
    [[ -z "$pid" ]] || die "Postfix already runs from $DIR (pid $pid); run '$0 stop $DIR' first"

    # Fail before starting anything if a port is taken: otherwise one server would come up
    # and the tests would talk to someone else's.
    while read -r name port; do
        port_in_use "$port" && busy+=("$name=$port")
    done < <(port_list)
    if ((${#busy[@]} > 0)); then
        echo "$PROG: TCP port(s) already in use: ${busy[*]}" >&2
        if command -v ss >/dev/null 2>&1; then
            ss -ltnp 2>/dev/null | grep -E ":($(port_list | awk '{print $2}' | paste -sd'|'))\b" >&2 || true
        fi
        die "stop whatever listens there, or pick other ports with RD_PORT_BASE (now ${RD_PORT_BASE:-10000})"
    fi
    if port_in_use "$POLICY_PORT"; then
        echo "$PROG: warning: something already listens on the policy port $POLICY_PORT;" \
            "tests expect nothing there by default" >&2
    fi

    # Servers' unprivileged processes (nobody for mail, postfix, dovecot) must be able to
    # traverse DIR; everything secret inside has its own tight mode.
    chmod 755 "$DIR"
    runuser -u nobody -- test -x "$DIR" ||
        die "user nobody cannot reach $DIR (a parent directory is not world-searchable); use a DIR under /tmp"
    # PDATA is left to `postfix start` (post-install create-missing), which makes it owned
    # by the postfix user as master requires.
    mkdir -p -- "$LOG" "$DCONF_DIR" "$DRUN" "$DSTATE" "$MAIL" "$PCONF" "$PQUEUE"
    # Neither master runs from here (checked above): pid files left by a crash are stale,
    # and Dovecot would refuse to start if such a pid had been reused by another process.
    rm -f -- "$ENV_FILE" "$DOVECOT_PID" "$POSTFIX_PID"
    chown nobody:nogroup "$MAIL"
    chmod 700 "$MAIL"
    # Postfix insists that its queue directory is owned by root; it creates the rest.
    chown root:root "$PQUEUE"
    chmod 755 "$PQUEUE"

    gen_tls
    gen_dovecot_conf
    gen_users
    gen_postfix_conf

    # From here on a failure must not leave half a set of servers running.
    trap 'rc=$?; if ((rc != 0)); then log_tails; echo "$PROG: start failed; stopping what was started" >&2; cmd_stop >&2 || true; fi' EXIT

    doveconf -c "$DCONF" -n >/dev/null || die "Dovecot rejects the generated $DCONF"
    # The daemons must not inherit our stdout/stderr: Dovecot's master keeps them open,
    # and a caller reading our output through a pipe (`start DIR | tee`, CI) would then
    # wait for EOF forever.  What they print at start-up goes to files under DIR/log.
    dovecot -c "$DCONF" </dev/null >"$LOG/dovecot-start.out" 2>&1 ||
        die "dovecot -c $DCONF failed: $(cat "$LOG/dovecot-start.out")"
    # `postfix start` runs the integrity checks, creates the queue subdirectories with the
    # right owners, and returns once master has initialised (master -w).
    postfix -c "$PCONF" start </dev/null >"$LOG/postfix-start.out" 2>&1 ||
        die "postfix -c $PCONF start failed: $(cat "$LOG/postfix-start.out")"

    echo "$PROG: waiting for greetings (up to ${RD_START_TIMEOUT:-20} s)"
    wait_ready || die "servers did not answer in time"
    write_env
    trap - EXIT

    echo "$PROG: started in $((($(date +%s%N) - t0) / 1000000)) ms; Dovecot pid $(dovecot_pid), Postfix pid $(postfix_pid)"
    echo "$PROG: export RD_SERVERS_ENV=$ENV_FILE"
    cat "$ENV_FILE"
}

cmd_status() {
    local pid name port rc=0
    pid=$(dovecot_pid)
    if [[ -n "$pid" ]]; then echo "Dovecot: running, pid $pid"; else echo "Dovecot: not running"; rc=1; fi
    pid=$(postfix_pid)
    if [[ -n "$pid" ]]; then echo "Postfix: running, pid $pid"; else echo "Postfix: not running"; rc=1; fi
    if [[ -r "$ENV_FILE" ]]; then
        # The env file records the ports actually used (RD_PORT_BASE may differ now).
        while IFS='=' read -r name port; do
            [[ "$name" == *_PORT ]] || continue
            if port_in_use "$port"; then echo "  $name $port listening"; else
                echo "  $name $port closed"
                [[ "$name" == RD_POLICY_PORT ]] || rc=1
            fi
        done <"$ENV_FILE"
        echo "env: $ENV_FILE"
    else
        echo "no $ENV_FILE (not started, or start failed)"
        rc=1
    fi
    return "$rc"
}

(($# == 2)) || usage
cmd=$1
case "$cmd" in start | stop | status) ;; *) usage ;; esac
set_paths "$2"
set_ports
"cmd_$cmd"
