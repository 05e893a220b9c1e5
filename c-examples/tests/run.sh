#!/usr/bin/env bash
# c-examples/tests/run.sh -- the C programs against real servers.
#
#   tests/servers/servers.sh start /tmp/rd-c && export RD_SERVERS_ENV=/tmp/rd-c/env
#   bash c-examples/tests/run.sh            (or: make test-c)
#
# Installs the library with `make install DESTDIR=<tmp> PREFIX=/usr`, builds every C program
# against that installed copy through pkg-config, then checks the example, directory-check,
# the PAM module (pam_wrapper + pamtester), checkpassword (directly and behind a second,
# private Dovecot on 127.0.0.1:10144), the Postfix policy relay to the installed
# remote-directoryd (over stdin and under the harness Postfix's spawn(8)), and all of them
# through the installed remote-directoryd. One line per check, then "N passed, M failed". Never skips: a
# missing server or tool is a failure. Must run as root (it starts a Dovecot).
# RD_C_KEEP=1 keeps the temporary directory for inspection.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$HERE/../.." && pwd -P)
CHECKPW_PORT=10144

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    local line
    for line in "$@"; do echo "       $line"; done
}
die() {
    echo "run.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

# ---------------------------------------------------------------------------------------
# prerequisites: fail, never skip

if [[ -z "${RD_SERVERS_ENV:-}" ]]; then
    die "RD_SERVERS_ENV is not set. Start the test servers first:
    tests/servers/servers.sh start /tmp/rd-c && export RD_SERVERS_ENV=/tmp/rd-c/env"
fi
[[ -r "$RD_SERVERS_ENV" ]] || die "RD_SERVERS_ENV=$RD_SERVERS_ENV is not readable; start the servers:
    tests/servers/servers.sh start /tmp/rd-c && export RD_SERVERS_ENV=/tmp/rd-c/env"
# shellcheck disable=SC1090
. "$RD_SERVERS_ENV"
for v in RD_CA RD_IMAP_PORT RD_LMTP_PORT RD_POLICY_PORT RD_POLICY_SPAWN_SMTP_PORT RD_POLICY_SPAWN_DIR; do
    [[ -n "${!v:-}" ]] || die "$RD_SERVERS_ENV does not define $v"
done
((EUID == 0)) || die "must run as root (starts a private Dovecot for the checkpassword test)"
for tool in cc make pkg-config nm readelf python3 pamtester dovecot doveconf; do
    command -v "$tool" >/dev/null || die "'$tool' not found (Debian: gcc make pkg-config binutils python3 pamtester dovecot-imapd)"
done
# awk reads all of ldconfig's output: exiting at the first match could leave ldconfig
# writing into a closed pipe, and its SIGPIPE (status 141) would end this script (pipefail).
PAM_WRAPPER_LIB=$(ldconfig -p | awk '/libpam_wrapper\.so / && !lib {lib = $NF} END {print lib}')
[[ -n "$PAM_WRAPPER_LIB" ]] || die "libpam_wrapper.so not found (Debian: apt-get install libpam-wrapper)"
[[ -e /usr/include/security/pam_modules.h ]] || die "PAM headers missing (Debian: libpam0g-dev)"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! { port_open "$RD_IMAP_PORT" && port_open "$RD_LMTP_PORT" && port_open "$RD_POLICY_SPAWN_SMTP_PORT"; }; then
    die "the test servers of $RD_SERVERS_ENV do not answer; restart them:
    tests/servers/servers.sh start ${RD_DIR:-/tmp/rd-c}"
fi
port_open "$RD_POLICY_PORT" && die "something already listens on the policy port $RD_POLICY_PORT"
port_open "$CHECKPW_PORT" && die "port $CHECKPW_PORT (private Dovecot) is already in use"

T=$(mktemp -d /tmp/rd-c-test.XXXXXX)
# The private Dovecot's auth process (user dovecot) runs our checkpassword from here.
chmod 755 "$T"
POLICY_PIDS=()
DAEMON_PID=
cleanup() {
    local pid i
    for pid in "${POLICY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -n "$DAEMON_PID" ]]; then kill "$DAEMON_PID" 2>/dev/null || true; fi
    if [[ -r "$T/dovecot/run/master.pid" ]]; then
        pid=$(cat "$T/dovecot/run/master.pid")
        kill "$pid" 2>/dev/null || true
        for i in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    fi
    if [[ "${RD_C_KEEP:-}" == 1 ]]; then echo "kept $T"; else rm -rf -- "$T"; fi
}
trap cleanup EXIT

# run NAME EXPECTED_STATUS CMD... : runs CMD, output in $T/out/NAME.{out,err}; sets $rc.
mkdir -p "$T/out"
run() {
    local name=$1
    shift
    rc=0
    "$@" >"$T/out/$name.out" 2>"$T/out/$name.err" || rc=$?
    OUT=$(cat "$T/out/$name.out")
    ERR=$(cat "$T/out/$name.err")
}
# expect DESC WANT_RC [grep-pattern-in-stdout+stderr]...
expect() {
    local desc=$1 want=$2 pat
    shift 2
    if [[ "$rc" != "$want" ]]; then
        fail "$desc" "exit status $rc, expected $want" "stdout: ${OUT:0:400}" "stderr: ${ERR:0:400}"
        return
    fi
    for pat in "$@"; do
        if ! grep -qE -- "$pat" <<<"$OUT"$'\n'"$ERR"; then
            fail "$desc" "output lacks /$pat/" "stdout: ${OUT:0:400}" "stderr: ${ERR:0:400}"
            return
        fi
    done
    ok "$desc"
}

# ---------------------------------------------------------------------------------------
# 1. install, then build everything against the installed copy

STAGE=$T/stage
if make -C "$ROOT" --no-print-directory install DESTDIR="$STAGE" PREFIX=/usr \
    >"$T/out/install.log" 2>&1; then
    ok "make install DESTDIR=$STAGE PREFIX=/usr"
else
    tail -n 30 "$T/out/install.log"
    die "make install failed (log above)"
fi

L=$STAGE/usr/lib
missing=()
for f in "$L/libremote_directory.so.0.1.0" "$L/libremote_directory.a" \
    "$STAGE/usr/include/remote_directory.h" "$L/pkgconfig/remote_directory.pc" \
    "$STAGE/usr/bin/directory-check" "$STAGE/usr/bin/checkpassword-remote-directory" \
    "$STAGE/usr/sbin/policy-remote-directory" "$L/security/pam_remote_directory.so" \
    "$STAGE/usr/sbin/remote-directoryd" "$L/systemd/system/remote-directoryd.service" \
    "$L/sysusers.d/remote-directoryd.conf"; do
    [[ -f "$f" ]] || missing+=("$f")
done
if ((${#missing[@]} == 0)); then ok "installed files present"; else fail "installed files present" "missing: ${missing[*]}"; fi
# The unit and the sysusers.d file as systemd reads them, offline (nothing here runs systemd
# as PID 1): every key known, the programs it names executable (looked up in the stage).
mkdir -p "$T/unit"
sed "s|/usr/sbin/|$STAGE/usr/sbin/|g" "$L/systemd/system/remote-directoryd.service" \
    >"$T/unit/remote-directoryd.service"
run unit-verify systemd-analyze verify --man=no "$T/unit/remote-directoryd.service"
if [[ $rc == 0 && -z "$OUT$ERR" ]]; then ok "systemd-analyze verify: the unit, without a warning"; else
    fail "systemd-analyze verify: the unit" "rc=$rc" "$OUT" "$ERR"; fi
mkdir -p "$T/sysusers-root/etc"
run sysusers systemd-sysusers --root="$T/sysusers-root" --dry-run "$L/sysusers.d/remote-directoryd.conf"
expect "systemd-sysusers --dry-run: creates user and group remote-directory" 0 \
    "Creating group 'remote-directory'" "Creating user 'remote-directory'"
if [[ "$(readlink "$L/libremote_directory.so.0")" == libremote_directory.so.0.1.0 &&
    "$(readlink "$L/libremote_directory.so")" == libremote_directory.so.0 ]]; then
    ok "SONAME symlinks .so -> .so.0 -> .so.0.1.0"
else
    fail "SONAME symlinks" "$(ls -l "$L"/libremote_directory.so* 2>&1)"
fi
soname=$(readelf -d "$L/libremote_directory.so.0.1.0" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [[ "$soname" == libremote_directory.so.0 ]]; then ok "SONAME is libremote_directory.so.0"; else
    fail "SONAME is libremote_directory.so.0" "readelf says '$soname'"; fi

export PKG_CONFIG_PATH=$L/pkgconfig
PKG="pkg-config --define-prefix"
if [[ "$($PKG --modversion remote_directory 2>&1)" == 0.1.0 ]]; then ok "pkg-config finds remote_directory 0.1.0"; else
    fail "pkg-config finds remote_directory" "$($PKG --modversion remote_directory 2>&1)"; fi
CFLAGS_RD=$($PKG --cflags remote_directory)
LIBS_RD=$($PKG --libs remote_directory)
LIBDIR_RD=$($PKG --variable=libdir remote_directory)
STATIC_RD=$($PKG --variable=static_libs remote_directory)
[[ "$LIBDIR_RD" == "$L" ]] || fail "pkg-config --define-prefix relocates libdir" "libdir=$LIBDIR_RD"

B=$T/bin
mkdir -p "$B"
WARN=(-Wall -Wextra -Werror -std=c99 -pedantic -O2)
build_ok=1
for prog in example directory-check checkpassword-remote-directory; do
    # shellcheck disable=SC2086  # pkg-config output is a list of words
    if ! cc "${WARN[@]}" -pthread $CFLAGS_RD -o "$B/$prog" "$ROOT/c-examples/$prog.c" \
        $LIBS_RD -Wl,-rpath,"$LIBDIR_RD" >"$T/out/cc-$prog.log" 2>&1; then
        build_ok=0
        fail "build $prog with pkg-config" "$(cat "$T/out/cc-$prog.log")"
    fi
done
# shellcheck disable=SC2086
if ! cc "${WARN[@]}" -fPIC -shared $CFLAGS_RD -o "$B/pam_remote_directory.so" \
    "$ROOT/c-examples/pam_remote_directory.c" $STATIC_RD \
    -Wl,--exclude-libs,ALL -Wl,--version-script="$ROOT/c-examples/pam_remote_directory.map" \
    -Wl,--gc-sections -Wl,-z,defs -lpam >"$T/out/cc-pam.log" 2>&1; then
    build_ok=0
    fail "build pam_remote_directory.so (static) with pkg-config" "$(cat "$T/out/cc-pam.log")"
fi
# The policy relay only talks to remote-directoryd: no library, no pkg-config.
if ! cc "${WARN[@]}" -o "$B/policy-remote-directory" "$ROOT/c-examples/policy-remote-directory.c" \
    >"$T/out/cc-policy-remote-directory.log" 2>&1; then
    build_ok=0
    fail "build policy-remote-directory" "$(cat "$T/out/cc-policy-remote-directory.log")"
fi
((build_ok)) && ok "C99 -Wall -Wextra -Werror -pedantic build of 4 programs + PAM module against the installed copy"
((build_ok)) || die "cannot continue without the programs"

exports=$(nm -D --defined-only "$B/pam_remote_directory.so" | awk '{print $3}' | sort | tr '\n' ' ')
if [[ "$exports" == "pam_sm_authenticate pam_sm_setcred " ]]; then ok "PAM module exports only pam_sm_*"; else
    fail "PAM module exports only pam_sm_*" "exports: $exports"; fi
if readelf -d "$B/pam_remote_directory.so" | grep -q 'libremote_directory'; then
    fail "PAM module contains the library (no libremote_directory NEEDED)"
else ok "PAM module links the static library (no libremote_directory NEEDED)"; fi
exports=$(nm -D --defined-only "$STAGE/usr/lib/security/pam_remote_directory.so" | awk '{print $3}' | sort | tr '\n' ' ')
if [[ "$exports" == "pam_sm_authenticate pam_sm_setcred " ]]; then ok "installed PAM module exports only pam_sm_*"; else
    fail "installed PAM module exports only pam_sm_*" "exports: $exports"; fi
if readelf -d "$B/directory-check" | grep -q 'NEEDED.*\[libremote_directory.so.0\]'; then
    ok "directory-check needs libremote_directory.so.0"
else fail "directory-check needs libremote_directory.so.0" "$(readelf -d "$B/directory-check" | grep NEEDED)"; fi
if readelf -d "$STAGE/usr/sbin/policy-remote-directory" | grep -q 'NEEDED.*libremote_directory'; then
    fail "installed policy-remote-directory does not link the library (it relays to the daemon)"
else ok "installed policy-remote-directory does not link the library (it relays to the daemon)"; fi

# ---------------------------------------------------------------------------------------
# configurations

CLOSED_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir_conf() { # NAME TYPE PORT
    cat <<EOF
[directory.$1]
type = "$2"
address = "localhost"
port = $3
timeout = "5s"
[directory.$1.tls]
implicit = false
ca-file = "$RD_CA"
[directory.$1.lookup]
domains = ["example.org"]
EOF
}
dir_conf imap imap "$RD_IMAP_PORT" >"$T/imap.toml"
dir_conf lmtp lmtp "$RD_LMTP_PORT" >"$T/lmtp.toml"
{ dir_conf imap imap "$RD_IMAP_PORT"; echo; dir_conf lmtp lmtp "$RD_LMTP_PORT"; } >"$T/both.toml"
dir_conf imap imap "$CLOSED_PORT" >"$T/imap-down.toml"
# forward.client-ip: the harness Dovecot trusts loopback, so its log shows the client named.
dir_conf imap imap "$RD_IMAP_PORT" | sed 's/^timeout = .*/&\nforward.client-ip = true/' >"$T/imap-fwd.toml"
dir_conf lmtp lmtp "$CLOSED_PORT" >"$T/lmtp-down.toml"
chmod 644 "$T"/*.toml

ALICE=alice@example.org
ALICE_PASS=alice-pass-1
BOB_PASS='p"a\ss wörd'
WRONG_PASS=not-alices-password

# dovecot_saw USER IP: the harness Dovecot's auth process logged a check of USER for a
# client at IP (what the server saw, not what the program believes it sent).
dovecot_saw() {
    local _
    for _ in $(seq 20); do
        grep -qF "passwd-file($1,$2," "$RD_DIR/log/dovecot.log" && return 0
        sleep 0.1
    done
    return 1
}
# A user name of this run only, so an old log line cannot match.
fwd_user() { echo "fwd-$1-$$@example.org"; }

# ---------------------------------------------------------------------------------------
# 2. example

run example "$B/example" "$T/both.toml" imap \
    auth "$ALICE" "$ALICE_PASS" OK \
    auth "$ALICE" "$WRONG_PASS" REJECTED \
    domain example.org OK \
    domain example.net REJECTED \
    use lmtp \
    rcpt "$ALICE" OK \
    rcpt nosuchuser@example.org REJECTED
expect "example: IMAP auth ok/wrong, domains, LMTP rcpt known/unknown" 0 '^6 of 6 results as expected' \
    'AUTHENTICATIONFAILED' '550 5\.1\.1'
run example-unexpected "$B/example" "$T/lmtp.toml" rcpt nosuchuser@example.org OK
expect "example: a result other than the expected one exits 1" 1 'UNEXPECTED' '^0 of 1 results'

# ---------------------------------------------------------------------------------------
# 3. directory-check

DC=$B/directory-check
feed() { # DATA CMD... : CMD with DATA on stdin
    local data=$1
    shift
    printf '%s' "$data" | "$@"
}
run dc-auth-ok feed "$ALICE_PASS"$'\n' "$DC" -c "$T/imap.toml" auth "$ALICE"
expect "directory-check auth: right password -> 0" 0 'alice@example.org: OK'
run dc-auth-bob feed "$BOB_PASS" "$DC" -c "$T/imap.toml" auth bob@example.org
expect "directory-check auth: bob's quote/backslash/space/UTF-8 password, no newline -> 0" 0 'bob@example.org: OK'
run dc-auth-wrong feed "$WRONG_PASS"$'\n' "$DC" -v -c "$T/imap.toml" auth "$ALICE"
expect "directory-check -v auth: wrong password -> 1 with the server's reply" 1 'REJECTED: .*AUTHENTICATIONFAILED'
run dc-auth-unknown feed "$ALICE_PASS"$'\n' "$DC" -c "$T/imap.toml" auth nosuchuser@example.org
expect "directory-check auth: unknown user -> 1" 1 'REJECTED'
run dc-auth-long feed "$(head -c 5000 /dev/zero | tr '\0' x)" "$DC" -c "$T/imap.toml" auth "$ALICE"
expect "directory-check auth: 5000-byte password -> 4" 4 'longer than 4096'
run dc-auth-down feed "$ALICE_PASS"$'\n' "$DC" -v -c "$T/imap-down.toml" auth "$ALICE"
expect "directory-check auth: server down (closed port) -> 2" 2 'TEMPORARY'
U=$(fwd_user dc)
run dc-client-ip feed "$WRONG_PASS"$'\n' "$DC" -c "$T/imap-fwd.toml" --client-ip 203.0.113.71 auth "$U"
expect "directory-check --client-ip: refused -> 1" 1 'REJECTED'
if dovecot_saw "$U" 203.0.113.71; then ok "directory-check --client-ip: Dovecot saw the client's address"
else fail "directory-check --client-ip: Dovecot saw the client's address" "$(grep -F "$U" "$RD_DIR/log/dovecot.log")"; fi
run dc-client-ip-bad feed "$ALICE_PASS"$'\n' "$DC" -v -c "$T/imap.toml" --client-ip 203.0.113.71:993 auth "$ALICE"
expect "directory-check --client-ip with a port -> 4" 4 'INVALID_INPUT' 'not an IPv4 or IPv6 address'
run dc-client-ip-rcpt "$DC" -c "$T/lmtp.toml" --client-ip 203.0.113.71 rcpt "$ALICE"
expect "directory-check --client-ip with rcpt -> 64" 64 'auth only'

# The terminal path: prompt on /dev/tty, no echo, exit status through the pty.
cat >"$T/pty_auth.py" <<'EOF'
import os, pty, signal, sys
prog, cfg, user, password = sys.argv[1:5]
signal.alarm(60)  # a lost password leaves the program waiting: fail, do not hang the suite
pid, fd = pty.fork()
if pid == 0:
    os.execv(prog, [prog, "-c", cfg, "auth", user])
buf = b""
while b"Password: " not in buf:
    chunk = os.read(fd, 1024)
    if not chunk:
        break
    buf += chunk
os.write(fd, password.encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    buf += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(buf.decode("utf-8", "replace").replace("\r", ""))
sys.stdout.write("password echoed\n" if password.encode() in buf else "password not echoed\n")
sys.exit(os.waitstatus_to_exitcode(status))
EOF
run dc-tty python3 "$T/pty_auth.py" "$DC" "$T/imap.toml" "$ALICE" "$ALICE_PASS"
expect "directory-check auth on a terminal: prompt, no echo -> 0" 0 '^Password: ' 'alice@example.org: OK' 'password not echoed'

run dc-rcpt-ok "$DC" -c "$T/lmtp.toml" rcpt "$ALICE"
expect "directory-check rcpt: existing -> 0" 0 'alice@example.org: OK'
run dc-rcpt-unknown "$DC" -v -c "$T/lmtp.toml" rcpt nosuchuser@example.org
expect "directory-check -v rcpt: unknown -> 1 with the 550" 1 'REJECTED: .*550 5\.1\.1'
run dc-rcpt-crlf "$DC" -c "$T/lmtp.toml" rcpt $'alice@example.org>\r\nRSET\r\nRCPT TO:<bob@example.org'
expect "directory-check rcpt: CR/LF injection -> 4, shown escaped" 4 'INVALID_INPUT' '\\r\\nRSET'
run dc-rcpt-several "$DC" -c "$T/lmtp.toml" rcpt "$ALICE" nosuchuser@example.org bob@example.org
expect "directory-check rcpt: several, worst status wins -> 1" 1 'alice@example.org: OK' 'nosuchuser@example.org: REJECTED' 'bob@example.org: OK'
run dc-rcpt-imap "$DC" -c "$T/imap.toml" rcpt "$ALICE"
expect "directory-check rcpt on an IMAP directory -> 3" 3 'UNSUPPORTED'
run dc-domain-local "$DC" -c "$T/imap.toml" domain example.org EXAMPLE.ORG.
expect "directory-check domain: local (any case, trailing dot) -> 0" 0 'example.org: OK'
run dc-domain-foreign "$DC" -c "$T/imap.toml" domain example.net
expect "directory-check domain: foreign -> 1" 1 'example.net: REJECTED'
run dc-noconfig "$DC" -c "$T/does-not-exist.toml" domain example.org
expect "directory-check: missing config -> 5" 5 'CONFIG'
run dc-nodir "$DC" -c "$T/both.toml" -d nosuchdirectory domain example.org
expect "directory-check: unknown directory name -> 5" 5 'CONFIG.*nosuchdirectory'
run dc-ambiguous "$DC" -c "$T/both.toml" domain example.org
expect "directory-check: two directories and no -d -> 5" 5 'CONFIG'
run dc-rcpt-down "$DC" -c "$T/lmtp-down.toml" rcpt "$ALICE"
expect "directory-check rcpt: server down -> 2" 2 'TEMPORARY'
run dc-help "$DC" --help
expect "directory-check --help lists every exit status" 0 '0 +OK' '1 +REJECTED' '2 +TEMPORARY' \
    '3 +UNSUPPORTED' '4 +INVALID_INPUT' '5 +CONFIG' '6 +INTERNAL' '64 +usage'
run dc-usage1 "$DC" frobnicate x
expect "directory-check: unknown command -> 64" 64 'unknown command'
run dc-usage2 "$DC" -c "$T/imap.toml" auth
expect "directory-check: auth without USER -> 64" 64 'auth takes exactly one USER'
run dc-usage3 "$DC" -q rcpt x
expect "directory-check: unknown option -> 64" 64 'unknown option -q'
run dc-show-one "$DC" -c "$T/both.toml" -d lmtp --show-config
expect "directory-check --show-config -d NAME: one directory, defaults filled in -> 0" 0 \
    '^\[directory\.lmtp\]$' "^port = $RD_LMTP_PORT\$" '^pool\.max-connections = 10$' \
    '^limits\.rcpt = 10$' '^lookup\.domains = \["example\.org"\]$'
if grep -q 'directory\.imap' "$T/out/dc-show-one.out"; then
    fail "directory-check --show-config -d lmtp shows only lmtp" "$OUT"
else ok "directory-check --show-config -d lmtp shows only lmtp"; fi
run dc-show-all "$DC" -c "$T/both.toml" --show-config
expect "directory-check --show-config: every directory -> 0" 0 '^\[directory\.imap\]$' '^\[directory\.lmtp\]$'
cp "$T/out/dc-show-all.out" "$T/shown.toml"
run dc-show-again "$DC" -c "$T/shown.toml" -d imap domain example.org
expect "directory-check: the shown configuration opens again" 0 'example.org: OK'
printf '[directory.%s]\ntype = "%s"\n%s = "localhost"\n%s\n' imap imap address 'tls.allow-invalid-cert = true' \
    lmtp lmtp adress '' >"$T/bad.toml"
run dc-check-bad "$DC" -c "$T/bad.toml" --check-config
expect "directory-check --check-config: every directory's error, with suggestions -> 5" 5 \
    "did you mean 'tls.allow-invalid-certs'" 'directory\.lmtp\.address: missing'
run dc-check-good "$DC" -c "$T/both.toml" --check-config
expect "directory-check --check-config: all valid -> 0" 0 '^directory\.imap: ok$' '^directory\.lmtp: ok$'
run dc-show-bad "$DC" -c "$T/bad.toml" --show-config
expect "directory-check --show-config: invalid file -> 5" 5 'CONFIG'
run dc-check-missing "$DC" -c "$T/does-not-exist.toml" --check-config
expect "directory-check --check-config: missing file -> 5" 5 'CONFIG.*cannot read'
run dc-usage4 "$DC" --show-config rcpt x
expect "directory-check --show-config with a command -> 64" 64 'take no command'
run dc-installed env LD_LIBRARY_PATH="$L" "$STAGE/usr/bin/directory-check" -c "$T/imap.toml" domain example.org
expect "installed directory-check runs (LD_LIBRARY_PATH, PREFIX=/usr has no rpath)" 0 'example.org: OK'

# ---------------------------------------------------------------------------------------
# 4. PAM module through pam_wrapper + pamtester

PAMD=$T/pam.d
mkdir -p "$PAMD"
MOD=$B/pam_remote_directory.so
echo "auth required $MOD config=$T/imap.toml debug" >"$PAMD/rd-ok"
echo "auth required $MOD config=$T/both.toml directory=imap" >"$PAMD/rd-named"
echo "auth required $MOD config=$T/imap-down.toml" >"$PAMD/rd-down"
echo "auth required $MOD config=$T/does-not-exist.toml" >"$PAMD/rd-badconfig"
echo "auth required $MOD config=$T/imap.toml confgi=typo" >"$PAMD/rd-badoption"
echo "auth required $MOD config=$T/imap.toml use_first_pass" >"$PAMD/rd-firstpass"
echo "auth required $MOD config=$T/imap-fwd.toml" >"$PAMD/rd-fwd"
pam() { # SERVICE USER PASSWORD [pamtester options]
    printf '%s\n' "$3" | LD_PRELOAD="$PAM_WRAPPER_LIB" PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$PAMD" \
        pamtester "${@:4}" "$1" "$2" authenticate
}
run pam-ok pam rd-ok "$ALICE" "$ALICE_PASS"
expect "PAM: right password -> success" 0 'successfully authenticated'
run pam-named pam rd-named bob@example.org "$BOB_PASS"
expect "PAM: directory=imap, bob's UTF-8 password -> success" 0 'successfully authenticated'
run pam-wrong pam rd-ok "$ALICE" "$WRONG_PASS"
expect "PAM: wrong password -> Authentication failure" 1 'pamtester: Authentication failure'
run pam-unknown pam rd-ok nosuchuser@example.org "$ALICE_PASS"
expect "PAM: unknown user -> Authentication failure" 1 'pamtester: Authentication failure'
# PAM_AUTHINFO_UNAVAIL; pam_strerror() calls it "Authentication service cannot retrieve
# authentication info" ("...cannot be recovered" is PAM_AUTHTOK_RECOVERY_ERR).
run pam-down pam rd-down "$ALICE" "$ALICE_PASS"
expect "PAM: server down -> PAM_AUTHINFO_UNAVAIL" 1 'pamtester: Authentication service cannot retrieve authentication info'
run pam-badconfig pam rd-badconfig "$ALICE" "$ALICE_PASS"
expect "PAM: missing config -> PAM_SERVICE_ERR" 1 'pamtester: Error in service module'
run pam-badoption pam rd-badoption "$ALICE" "$ALICE_PASS"
expect "PAM: unknown module option -> PAM_SERVICE_ERR" 1 'pamtester: Error in service module' 'unknown or empty option'
run pam-firstpass pam rd-firstpass "$ALICE" "$ALICE_PASS"
expect "PAM: use_first_pass with no earlier password -> Authentication failure" 1 'pamtester: Authentication failure'
U=$(fwd_user pam)
run pam-rhost pam rd-fwd "$U" "$WRONG_PASS" -I rhost=2001:db8::72
expect "PAM: PAM_RHOST=2001:db8::72, refused -> Authentication failure" 1 'pamtester: Authentication failure'
if dovecot_saw "$U" 2001:db8::72; then ok "PAM: Dovecot saw PAM_RHOST as the client's address"
else fail "PAM: Dovecot saw PAM_RHOST as the client's address" "$(grep -F "$U" "$RD_DIR/log/dovecot.log")"; fi
U=$(fwd_user pamhost)
run pam-rhost-name pam rd-fwd "$U" "$WRONG_PASS" -I rhost=client.example.net
expect "PAM: PAM_RHOST a host name -> checked as from an unknown client" 1 'pamtester: Authentication failure'
if dovecot_saw "$U" 127.0.0.1; then ok "PAM: a host name in PAM_RHOST is not forwarded"
else fail "PAM: a host name in PAM_RHOST is not forwarded" "$(grep -F "$U" "$RD_DIR/log/dovecot.log")"; fi

# One process, six PAM transactions: the module is loaded and unloaded each time (the
# reason it keeps no handle between calls); right and wrong passwords alternate.
cat >"$T/pam_loop.c" <<'EOF'
#define _DEFAULT_SOURCE
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static const char *password;
static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    int i;
    (void)data;
    *resp = calloc((size_t)n, sizeof **resp);
    for (i = 0; i < n; i++)
        if (msg[i]->msg_style == PAM_PROMPT_ECHO_OFF)
            (*resp)[i].resp = strdup(password);
    return PAM_SUCCESS;
}
int main(int argc, char **argv)
{
    struct pam_conv c = { conv, NULL };
    int i, wrong = 0;
    for (i = 0; i < 6 && argc == 4; i++) {
        pam_handle_t *h;
        int rc;
        password = i % 2 ? argv[3] : argv[2];
        pam_start(argv[1], "alice@example.org", &c, &h);
        rc = pam_authenticate(h, 0);
        printf("transaction %d: %s\n", i, pam_strerror(h, rc));
        wrong += (rc == PAM_SUCCESS) != (i % 2 == 0);
        pam_end(h, rc);
    }
    return wrong != 0 || argc != 4;
}
EOF
if cc "${WARN[@]}" -o "$B/pam_loop" "$T/pam_loop.c" -lpam >"$T/out/cc-pam-loop.log" 2>&1; then
    run pam-loop env LD_PRELOAD="$PAM_WRAPPER_LIB" PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$PAMD" \
        "$B/pam_loop" rd-ok "$ALICE_PASS" "$WRONG_PASS"
    expect "PAM: six transactions in one process (module reloaded each time), ok/wrong alternating" 0 \
        'transaction 4: Success' 'transaction 5: Authentication failure'
else
    fail "build the PAM loop client" "$(cat "$T/out/cc-pam-loop.log")"
fi

# ---------------------------------------------------------------------------------------
# 5. checkpassword, directly

CP=$B/checkpassword-remote-directory
cat >"$T/reply.sh" <<'EOF'
#!/bin/sh
# stands in for Dovecot's checkpassword-reply
echo "reply program ran for USER=$USER"
EOF
chmod 755 "$T/reply.sh"
cpw() { # CONFIG USER PASSWORD [extra env...]
    local cfg=$1 user=$2 pass=$3
    shift 3
    env REMOTE_DIRECTORY_CONFIG="$cfg" "$@" "$CP" "$T/reply.sh" 3< <(printf '%s\0%s\0%s\0' "$user" "$pass" 1700000000)
}
run cp-ok cpw "$T/imap.toml" "$ALICE" "$ALICE_PASS"
expect "checkpassword: right password -> execs the reply program with USER set, 0" 0 "reply program ran for USER=$ALICE"
run cp-named cpw "$T/both.toml" bob@example.org "$BOB_PASS" REMOTE_DIRECTORY_NAME=imap
expect "checkpassword: REMOTE_DIRECTORY_NAME=imap, bob -> 0" 0 'reply program ran for USER=bob@example.org'
run cp-wrong cpw "$T/imap.toml" "$ALICE" "$WRONG_PASS"
expect "checkpassword: wrong password -> 1" 1 'REJECTED'
run cp-down cpw "$T/imap-down.toml" "$ALICE" "$ALICE_PASS"
expect "checkpassword: server down -> 111" 111 'TEMPORARY'
run cp-noconfig cpw "$T/does-not-exist.toml" "$ALICE" "$ALICE_PASS"
expect "checkpassword: missing config -> 111" 111 'CONFIG'
run cp-long "$CP" true 3< <(head -c 600 /dev/zero)
expect "checkpassword: over 512 bytes on fd 3 -> 2" 2 'more than 512 bytes'
run cp-nofd3 "$CP" true
expect "checkpassword: no fd 3 -> 2" 2 'cannot read fd 3'
U=$(fwd_user cp)
run cp-remoteip cpw "$T/imap-fwd.toml" "$U" "$WRONG_PASS" TCPREMOTEIP=203.0.113.73
expect "checkpassword: TCPREMOTEIP set, refused -> 1" 1 'REJECTED'
if dovecot_saw "$U" 203.0.113.73; then ok "checkpassword: Dovecot saw TCPREMOTEIP as the client's address"
else fail "checkpassword: Dovecot saw TCPREMOTEIP as the client's address" "$(grep -F "$U" "$RD_DIR/log/dovecot.log")"; fi
run cp-remoteip-bad cpw "$T/imap.toml" "$ALICE" "$ALICE_PASS" TCPREMOTEIP=not-an-address
expect "checkpassword: TCPREMOTEIP not an address -> unknown client, still checked" 0 "reply program ran for USER=$ALICE" 'TCPREMOTEIP is not an IP address'
leaks=$(grep -lF -e "$ALICE_PASS" -e "$BOB_PASS" -e "$WRONG_PASS" "$T"/out/cp-* || true)
if [[ -z "$leaks" ]]; then ok "checkpassword never prints a password"; else
    fail "checkpassword never prints a password" "found in: $leaks"; fi

# ---------------------------------------------------------------------------------------
# 6. checkpassword behind a real Dovecot: our IMAP login is answered by the harness Dovecot

DV=$T/dovecot
mkdir -p "$DV/run" "$DV/state" "$DV/home"
chown nobody:nogroup "$DV/home"
cat >"$DV/dovecot.conf" <<EOF
# private Dovecot of c-examples/tests/run.sh: IMAP on 127.0.0.1:$CHECKPW_PORT, passwords
# checked by checkpassword-remote-directory against the harness Dovecot.
protocols = imap
listen = 127.0.0.1
base_dir = $DV/run
state_dir = $DV/state
instance_name = rd-c-checkpassword
log_path = $DV/dovecot.log
info_log_path = $DV/dovecot.log
auth_verbose = yes
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
import_environment = TZ REMOTE_DIRECTORY_CONFIG=$T/imap.toml
passdb {
  driver = checkpassword
  args = $CP
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DV/home/%n
}
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $CHECKPW_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
if dovecot -c "$DV/dovecot.conf" >"$T/out/dovecot-start.log" 2>&1; then
    for _ in $(seq 100); do port_open "$CHECKPW_PORT" && break; sleep 0.1; done
fi
if port_open "$CHECKPW_PORT"; then
    ok "private Dovecot with passdb checkpassword listens on 127.0.0.1:$CHECKPW_PORT"
    imap_login() { # USER PASSWORD
        python3 - "$CHECKPW_PORT" "$1" "$2" <<'EOF'
import imaplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port)
try:
    typ, data = m.login(user, password)
    print("LOGIN", typ, data[0].decode())
    m.logout()
except imaplib.IMAP4.error as e:
    print("LOGIN NO", e)
    sys.exit(1)
EOF
    }
    run dv-ok imap_login "$ALICE" "$ALICE_PASS"
    expect "Dovecot + checkpassword: alice's IMAP LOGIN succeeds" 0 'LOGIN OK'
    run dv-wrong imap_login "$ALICE" "$WRONG_PASS"
    expect "Dovecot + checkpassword: wrong password is refused" 1 'AUTHENTICATIONFAILED'
    if grep -q 'checkpassword' "$DV/dovecot.log" && grep -q "REJECTED" "$DV/dovecot.log"; then
        ok "Dovecot's log shows our checkpassword program deciding"
    else
        fail "Dovecot's log shows our checkpassword program deciding" "$(tail -n 15 "$DV/dovecot.log")"
    fi
else
    fail "private Dovecot on 127.0.0.1:$CHECKPW_PORT starts" "$(cat "$T/out/dovecot-start.log")" \
        "$(tail -n 20 "$DV/dovecot.log" 2>/dev/null)"
fi

# ---------------------------------------------------------------------------------------
# 7. policy-remote-directory: Postfix policy requests on stdin/stdout (as spawn(8) runs
#    it), relayed to the policy service of the installed remote-directoryd, which decides

PS=$B/policy-remote-directory
RDD_BIN=$STAGE/usr/sbin/remote-directoryd
PD=$RD_POLICY_SPAWN_DIR   # smtpd's spawn(8) service of section 8 finds the program here
# The daemon of the policy tests: recipients from the harness LMTP, on a Unix socket the
# spawn(8) user (nobody) may use, and on loopback TCP; a short idle timeout, so that the
# relay meets connections the daemon closed between requests.
{ dir_conf lmtp lmtp "$RD_LMTP_PORT"
  printf '\n[daemon]\nidle-timeout = "1s"\npolicy.socket = "%s/policy"\npolicy.socket-mode = "0666"\n' "$PD"
  printf 'policy.listen = "127.0.0.1:%s"\npolicy.directory = "lmtp"\n' "$RD_POLICY_PORT"; } >"$T/policy-daemon.toml"
# A second one whose LMTP server does not answer: its answer is a deferral.
mkdir -p "$T/pdown"
{ dir_conf lmtp lmtp "$CLOSED_PORT"
  printf '\n[daemon]\npolicy.socket = "%s/pdown/policy"\npolicy.directory = "lmtp"\n' "$T"; } >"$T/policy-down.toml"
POLICY_PIDS=()
# start_policy_daemon CONFIG SOCKET: the installed daemon, log in $T/out/policy-daemon.log
start_policy_daemon() {
    "$RDD_BIN" -c "$1" 2>>"$T/out/policy-daemon.log" &
    POLICY_PIDS+=($!)
    disown "$!" # killed on purpose below: no job report from bash
    for _ in $(seq 200); do
        python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$2" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
start_policy_daemon "$T/policy-daemon.toml" "$PD/policy" ||
    fail "policy: remote-directoryd listens on $PD/policy" "$(cat "$T/out/policy-daemon.log")"
start_policy_daemon "$T/policy-down.toml" "$T/pdown/policy" ||
    fail "policy: remote-directoryd listens on $T/pdown/policy" "$(cat "$T/out/policy-daemon.log")"
# Scripted daemons for what the real one does not do on demand: one that reads the request
# and never answers, one that closes without answering, one whose answer never ends.
python3 - "$T/peers" >"$T/out/policy-peers.log" 2>&1 <<'EOF' &
import os, socket, sys, threading
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
def serve(name, handle):
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(d, name))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
def silent(c):
    while c.recv(4096):
        pass
def closing(c):
    c.recv(4096)
    c.close()
def flood(c):
    c.recv(4096)
    try:
        c.sendall(b"action=" + b"x" * 100000)
    except OSError:
        pass
for name, handle in (("silent", silent), ("closing", closing), ("flood", flood)):
    threading.Thread(target=serve, args=(name, handle), daemon=True).start()
threading.Event().wait()
EOF
POLICY_PIDS+=($!)
for _ in $(seq 100); do [[ -S "$T/peers/flood" ]] && break; sleep 0.05; done

request() { # RECIPIENT [STATE]
    printf 'request=smtpd_access_policy\nprotocol_state=%s\nprotocol_name=ESMTP\n' "${2:-RCPT}"
    printf 'client_address=127.0.0.1\nhelo_name=localhost\nsender=\nrecipient=%s\n' "$1"
    printf 'recipient_count=0\nqueue_id=\nsize=0\n\n'
}
DEFER='action=DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable'
# One request each; the answer must be exactly ACTION and an empty line, and the relay's
# stderr must match STDERR ("" = the relay logged nothing: the answer is the daemon's).
# description | -s SOCKET (and options) | recipient | protocol_state | action | stderr
policy_cases=(
    "existing user -> DUNNO|$PD/policy|$ALICE|RCPT|action=DUNNO|"
    "unknown user -> 550 5.1.1|$PD/policy|nosuchuser@example.org|RCPT|action=550 5.1.1 user unknown|"
    "foreign domain -> DUNNO|$PD/policy|someone@example.net|RCPT|action=DUNNO|"
    "other protocol_state -> DUNNO|$PD/policy|nosuchuser@example.org|DATA|action=DUNNO|"
    "daemon on loopback TCP (-s HOST:PORT), unknown user -> 550 5.1.1|127.0.0.1:$RD_POLICY_PORT|nosuchuser@example.org|RCPT|action=550 5.1.1 user unknown|"
    "remote server down -> the daemon's DEFER_IF_PERMIT|$T/pdown/policy|$ALICE|RCPT|$DEFER|"
    "daemon not running -> the relay's own DEFER_IF_PERMIT|$T/no-daemon/policy|$ALICE|RCPT|$DEFER|cannot connect: No such file or directory"
    "daemon silent past -t 1 -> DEFER_IF_PERMIT|$T/peers/silent -t 1|$ALICE|RCPT|$DEFER|no answer within 1 s"
    "daemon closes without an answer -> DEFER_IF_PERMIT|$T/peers/closing|$ALICE|RCPT|$DEFER|closed the connection without an answer"
    "daemon's answer never ends -> DEFER_IF_PERMIT|$T/peers/flood|$ALICE|RCPT|$DEFER|answer longer than 8192 bytes"
)
# stderr_is WANT: the relay's stderr is empty when WANT is, else it contains WANT.
stderr_is() { if [[ -z "$1" ]]; then [[ -z "$ERR" ]]; else grep -qF -- "$1" <<<"$ERR"; fi; }
for case in "${policy_cases[@]}"; do
    IFS='|' read -r desc target rcpt state want want_err <<<"$case"
    # shellcheck disable=SC2086  # "SOCKET -t N": the options are words
    run ps-case "$PS" -s $target < <(request "$rcpt" "$state")
    if [[ $rc == 0 && "$(od -An -c "$T/out/ps-case.out")" == "$(printf '%s\n\n' "$want" | od -An -c)" ]] &&
        stderr_is "$want_err"; then
        ok "policy relay: $desc"
    else fail "policy relay: $desc" "rc=$rc" "stdout: $OUT" "stderr: $ERR" "want: $want / stderr: ${want_err:-nothing}"; fi
done

# Several requests on one connection: answered in order, over one connection to the daemon
# (-v logs each connection); after a pause longer than daemon.idle-timeout the daemon has
# closed that connection, and the relay replaces it without deferring anything.
several() {
    request "$ALICE"; request nosuchuser@example.org; request "$ALICE"
    sleep 2
    request nosuchuser@example.org
}
run ps-several "$PS" -v -s "$PD/policy" < <(several)
actions=$(grep '^action=' "$T/out/ps-several.out" | tr '\n' ' ')
if [[ $rc == 0 && "$actions" == "action=DUNNO action=550 5.1.1 user unknown action=DUNNO action=550 5.1.1 user unknown " &&
    "$(grep -c 'connected to remote-directoryd' "$T/out/ps-several.err")" == 2 &&
    "$(grep -c 'closed the idle connection' "$T/out/ps-several.err")" == 1 ]]; then
    ok "policy relay: 4 requests answered in order; 3 on one daemon connection, then a new one for the one the daemon closed"
else fail "policy relay: several requests in order on a kept connection" "rc=$rc" "stdout: $OUT" "stderr: $ERR"; fi
if command -v valgrind >/dev/null; then
    run ps-valgrind valgrind --quiet --error-exitcode=99 --leak-check=full "$PS" -s "$PD/policy" \
        < <(request "$ALICE"; request nosuchuser@example.org)
    expect "policy relay under valgrind memcheck: no error, no leak" 0 '^action=550 5\.1\.1'
else fail "policy relay under valgrind memcheck" "valgrind not found (Debian: apt-get install valgrind)"; fi

# Over-long input: logged, nothing answered, exit 65.
overlong_line() { request "$ALICE"; printf 'recipient=%s\n\n' "$(head -c 5000 /dev/zero | tr '\0' a)"; }
overlong_request() { for i in $(seq 1000); do printf 'x%d=%s\n' "$i" "$(head -c 100 /dev/zero | tr '\0' y)"; done; echo; }
for input in "overlong_line|line longer than 4096 bytes" "overlong_request|longer than 65536 bytes"; do
    IFS='|' read -r feed_fn want_err <<<"$input"
    run ps-overlong "$PS" -s "$PD/policy" < <("$feed_fn")
    if [[ $rc == 65 && "$(grep -c '^action=' "$T/out/ps-overlong.out")" == "$([[ $feed_fn == overlong_line ]] && echo 1 || echo 0)" ]] &&
        grep -qF "$want_err" <<<"$ERR"; then
        ok "policy relay: $want_err -> logged, not answered, exit 65"
    else fail "policy relay: $want_err -> exit 65" "rc=$rc" "stdout: $OUT" "stderr: $ERR"; fi
done

# Usage: the options of the stand-alone program are gone and say what replaces them.
for args in "-c /etc/remote-directory.toml|daemon.policy.directory" "-d lmtp|daemon.policy.directory" \
    "-l 127.0.0.1:10040|daemon.policy.listen" "-s nosuchsocket|HOST:PORT" "-t 0|seconds"; do
    IFS='|' read -r opts want_err <<<"$args"
    # shellcheck disable=SC2086
    run ps-usage "$PS" $opts </dev/null
    expect "policy relay: $opts -> usage error 64 naming $want_err" 64 "$want_err"
done

# As spawn(8) runs it: stdin, stdout AND stderr on one socket. Log lines (here: the daemon
# cannot be reached, then the over-long line) must go to syslog, never to the client.
run ps-spawn python3 - "$PS" "$T/no-daemon/policy" <<'EOF'
import socket, subprocess, sys
ours, theirs = socket.socketpair()
p = subprocess.Popen([sys.argv[1], "-s", sys.argv[2]], stdin=theirs, stdout=theirs, stderr=theirs)
theirs.close()
ours.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=alice@example.org\n\n"
             b"recipient=" + b"a" * 5000 + b"\n\n")
got = b""
while True:
    chunk = ours.recv(4096)
    if not chunk:
        break
    got += chunk
print("exit", p.wait())
print(repr(got))
sys.exit(0 if got == b"action=DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable\n\n" else 1)
EOF
expect "policy relay under spawn(8) (stderr = client socket): only the answer reaches the client" 0 'exit 65'

# The daemon killed between two requests: the next one is deferred by the relay; started
# again, the daemon answers the following ones, through the same relay process. The new
# daemon keeps running for section 8.
run ps-restart python3 - "$PS" "$PD/policy" "${POLICY_PIDS[0]}" "$RDD_BIN" "$T/policy-daemon.toml" \
    "$T/out/policy-daemon.log" <<'EOF'
import os, signal, socket, subprocess, sys, time
relay, path, pid, daemon, config, log = sys.argv[1:7]
def req(rcpt):
    return (b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n" % rcpt.encode())
def listening():
    try:
        socket.socket(socket.AF_UNIX).connect(path)
        return True
    except OSError:
        return False
p = subprocess.Popen([relay, "-s", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def ask(rcpt):
    p.stdin.write(req(rcpt))
    p.stdin.flush()
    return (p.stdout.readline() + p.stdout.readline()).decode()
answers = [ask("alice@example.org")]
os.kill(int(pid), signal.SIGKILL)
while listening():
    time.sleep(0.05)
answers.append(ask("nosuchuser@example.org"))
d = subprocess.Popen([daemon, "-c", config], stderr=open(log, "a"), start_new_session=True)
print("daemon", d.pid)
while not listening():
    time.sleep(0.05)
answers += [ask("nosuchuser@example.org"), ask("alice@example.org")]
p.stdin.close()
print("relay exit", p.wait())
print(answers)
want = ["action=DUNNO\n\n",
        "action=DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable\n\n",
        "action=550 5.1.1 user unknown\n\n", "action=DUNNO\n\n"]
sys.exit(0 if answers == want else 1)
EOF
expect "policy relay: daemon killed between requests -> next deferred; restarted -> answers again, same relay" \
    0 'relay exit 0' 'cannot connect'
restarted=$(sed -n 's/^daemon \([0-9]*\)$/\1/p' "$T/out/ps-restart.out")
[[ -n "$restarted" ]] && POLICY_PIDS+=("$restarted")

# ---------------------------------------------------------------------------------------
# 8. behind a real Postfix: smtpd -> check_policy_service unix:private/rdpolicy -> spawn(8)
#    -> policy-remote-directory (as nobody) -> remote-directoryd -> Dovecot LMTP

install -m 755 "$PS" "$PD/policy-remote-directory"
smtp_rcpts() { # RCPT... : prints "code message" per recipient, one SMTP session
    python3 - "$RD_POLICY_SPAWN_SMTP_PORT" "$@" <<'EOF'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("client.example.net")
code, msg = s.mail("")
assert code == 250, (code, msg)
for rcpt in sys.argv[2:]:
    code, msg = s.rcpt(rcpt)
    print(rcpt, code, msg.decode())
s.quit()
EOF
}
run pf-spawn smtp_rcpts "$ALICE" nosuchuser@example.org bob@example.org
expect "Postfix + spawn(8) relay + daemon, one session: alice -> 250, nosuchuser -> 550 5.1.1 (the daemon's policy), bob -> 250" 0 \
    "^$ALICE 250 " \
    '^nosuchuser@example\.org 550 5\.1\.1 <nosuchuser@example\.org>: Recipient address rejected: user unknown$' \
    '^bob@example\.org 250 '
if [[ -n "$restarted" ]]; then kill -KILL "$restarted" 2>/dev/null || true; fi
for _ in $(seq 100); do [[ -d /proc/$restarted ]] || break; sleep 0.05; done
run pf-spawn-down smtp_rcpts "$ALICE"
expect "Postfix + spawn(8) relay, daemon not running: RCPT alice -> 450 4.3.0 (the relay's deferral)" 0 \
    "^$ALICE 450 4\.3\.0 <$ALICE>: Recipient address rejected: recipient lookup temporarily unavailable$"

# ---------------------------------------------------------------------------------------
# 9. every program through the installed remote-directoryd, by configuration alone: a
#    `type = "daemon"` directory instead of the server's address

RDD=$T/rdd
mkdir -p "$RDD"
{ dir_conf imap imap "$RD_IMAP_PORT"; printf '[directory.imap.cache]\nauth-ttl = "5m"\n\n'; dir_conf lmtp lmtp "$RD_LMTP_PORT"
  printf '\n[daemon]\nsocket = "%s/socket"\nsocket-mode = "0666"\n' "$RDD"; } >"$RDD/daemon.toml"
for name in imap lmtp; do
    printf '[directory.%s]\ntype = "daemon"\nsocket = "%s/socket"\ntimeout = "10s"\n' "$name" "$RDD"
done >"$RDD/client.toml"
printf '[directory.imap]\ntype = "daemon"\nsocket = "%s/socket"\n' "$RDD" >"$RDD/imap.toml"
chmod 644 "$RDD"/*.toml
start_daemon() {
    "$STAGE/usr/sbin/remote-directoryd" -c "$RDD/daemon.toml" 2>>"$T/out/remote-directoryd.log" &
    DAEMON_PID=$!
    for _ in $(seq 200); do [[ -S "$RDD/socket" ]] && return 0; sleep 0.05; done
    return 1
}
run rdd-check "$STAGE/usr/sbin/remote-directoryd" --check -c "$RDD/daemon.toml"
expect "remote-directoryd --check on the daemon's file -> 0" 0 'OK \(2 directories, 1 sockets\)'
if start_daemon; then
    ok "installed remote-directoryd listens on $RDD/socket"
    dovecot_logins() { grep -c 'Login: user=<bob@example.org>' "$RD_DIR/log/dovecot.log" || true; }
    echo "auth required $MOD config=$RDD/imap.toml" >"$PAMD/rd-daemon"
    before=$(dovecot_logins)
    run pam-daemon-1 pam rd-daemon bob@example.org "$BOB_PASS"
    expect "PAM through the daemon: bob -> success" 0 'successfully authenticated'
    run pam-daemon-2 pam rd-daemon bob@example.org "$BOB_PASS"
    expect "PAM through the daemon: bob again (a new PAM handle) -> success" 0 'successfully authenticated'
    after=$(dovecot_logins)
    if ((after - before == 1)); then
        ok "PAM through the daemon: two logins, Dovecot saw one (the second from the daemon's cache)"
    else fail "PAM through the daemon: the second login comes from the daemon's cache" \
        "Dovecot logged $((after - before)) logins of bob"; fi
    run pam-daemon-wrong pam rd-daemon "$ALICE" "$WRONG_PASS"
    expect "PAM through the daemon: wrong password -> Authentication failure" 1 'pamtester: Authentication failure'
    run cp-daemon cpw "$RDD/client.toml" "$ALICE" "$ALICE_PASS" REMOTE_DIRECTORY_NAME=imap
    expect "checkpassword through the daemon: right password -> 0" 0 "reply program ran for USER=$ALICE"
    run cp-daemon-wrong cpw "$RDD/client.toml" "$ALICE" "$WRONG_PASS" REMOTE_DIRECTORY_NAME=imap
    expect "checkpassword through the daemon: wrong password -> 1" 1 'REJECTED' 'AUTHENTICATIONFAILED'
    run dc-daemon "$DC" -v -c "$RDD/client.toml" -d lmtp rcpt nosuchuser@example.org
    expect "directory-check through the daemon: unknown recipient -> REJECTED with the server's reply" 1 \
        'REJECTED' '550 5\.1\.1'
    py_daemon() { # Python's ctypes binding on the installed library, through the daemon
        env REMOTE_DIRECTORY_LIB="$L/libremote_directory.so.0.1.0" PYTHONPATH="$ROOT/python" \
            python3 - "$RDD/client.toml" "$ALICE" "$ALICE_PASS" <<'EOF'
import sys
import remote_directory as rd
config, user, password = sys.argv[1:4]
with rd.Directory.open(config, "lmtp") as d:
    try:
        print("rcpt", d.rcpt(user), d.rcpt("nosuchuser@example.org"))
    except rd.Temporary as e:
        print("temporary:", e)
with rd.Directory.open(config, "imap") as d:
    try:
        print("auth", d.auth(user, password))
    except rd.Temporary as e:
        print("temporary:", e)
EOF
    }
    run py-daemon py_daemon
    expect "Python through the daemon: rcpt known/unknown, auth" 0 '^rcpt True False$' '^auth True$'
    kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
    run pam-daemon-down pam rd-daemon bob@example.org "$BOB_PASS"
    expect "PAM, daemon killed -> PAM_AUTHINFO_UNAVAIL (temporary), never a refusal" 1 \
        'pamtester: Authentication service cannot retrieve authentication info'
    run py-daemon-down py_daemon
    expect "Python, daemon killed -> rd.Temporary naming the daemon" 0 '^temporary: .*remote-directoryd at '
    run cp-daemon-down cpw "$RDD/client.toml" "$ALICE" "$ALICE_PASS" REMOTE_DIRECTORY_NAME=imap
    expect "checkpassword, daemon killed -> 111 (temporary)" 111 'TEMPORARY' 'remote-directoryd at '
else
    fail "installed remote-directoryd listens on $RDD/socket" "$(cat "$T/out/remote-directoryd.log")"
fi

# ---------------------------------------------------------------------------------------
# no password in any output of any program

leaks=$(grep -rlF -e "$ALICE_PASS" -e "$BOB_PASS" -e "$WRONG_PASS" "$T/out" 2>/dev/null || true)
if [[ -z "$leaks" ]]; then ok "no password appears in any program's output"; else
    fail "no password appears in any program's output" "$leaks"; fi

echo "$passed passed, $failed failed"
((failed == 0))
