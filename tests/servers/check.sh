#!/usr/bin/env bash
# Self-test of the servers started by tests/servers/servers.sh: proves that what the
# library's tests rely on (tests/servers/README.md) really holds, using only Python's stdlib
# (imaplib, smtplib, ssl) so a failure here points at the servers, not at our code.
#
#   tests/servers/check.sh DIR      (DIR as given to `servers.sh start`)
#
# Exit 0 when every check passed.  Takes ~3 s, most of it Dovecot's ~500 ms answer to each
# wrong password.
set -euo pipefail

(($# == 1)) || { echo "usage: $0 DIR" >&2; exit 2; }
ENV_FILE=$1/env
[[ -r "$ENV_FILE" ]] || {
    echo "check.sh: no $ENV_FILE; start the servers first: tests/servers/servers.sh start $1" >&2
    exit 1
}
command -v python3 >/dev/null 2>&1 || { echo "check.sh: python3 not found" >&2; exit 1; }

# The env file is KEY=VALUE lines; Python reads it itself (same parser the tests need).
exec python3 - "$ENV_FILE" <<'EOF'
import base64, imaplib, os, smtplib, socket, ssl, sys, time, uuid

env = {}
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v

HOST = "127.0.0.1"
port = lambda k: int(env[k])
ALICE, ALICE_PW = "alice@example.org", "alice-pass-1"
BOB, BOB_PW = "bob@example.org", 'p"a\\ss w\u00f6rd'   # p"a\ss wörd
assert BOB_PW.encode("utf-8") == b'p"a\\ss w\xc3\xb6rd'
NOBODY = "nosuchuser@example.org"
TIMEOUT = 10

# Verify the servers' certificate against the test CA, hostname included: for
# 127.0.0.1 (IP SAN) when we connect by address, for "localhost" (DNS SAN) below.
ctx = ssl.create_default_context(cafile=env["RD_CA"])

passed = failed = 0
def check(name, fn):
    global passed, failed
    t0 = time.monotonic()
    try:
        detail = fn()
        ms = (time.monotonic() - t0) * 1000
        print("ok   %-62s %6.0f ms%s" % (name, ms, "  " + detail if detail else ""))
        passed += 1
    except Exception as e:  # report and carry on: one run shows every problem
        ms = (time.monotonic() - t0) * 1000
        print("FAIL %-62s %6.0f ms  %s: %s" % (name, ms, type(e).__name__, e))
        failed += 1

def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)

def plain(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode("utf-8")).decode()

# ---- IMAP -------------------------------------------------------------------------

def imap_starttls():
    m = imaplib.IMAP4(HOST, port("RD_IMAP_PORT"), timeout=TIMEOUT)
    expect("STARTTLS" in m.capabilities, "no STARTTLS in %r" % (m.capabilities,))
    m.starttls(ssl_context=ctx)
    return m

def imap_login_alice():
    m = imap_starttls()
    typ, data = m.login(ALICE, ALICE_PW)
    m.logout()
    return "%s %s" % (typ, data[0][:40])

def imap_auth_plain_bob():
    # imaplib.login() cannot send non-ASCII; AUTHENTICATE PLAIN carries the UTF-8 bytes.
    m = imap_starttls()
    typ, data = m.authenticate("PLAIN", lambda _: b"\0" + BOB.encode() + b"\0" + BOB_PW.encode("utf-8"))
    m.logout()
    return "%s %s" % (typ, data[0][:40])

def imaps_login_localhost():
    # Implicit TLS, certificate checked for the name "localhost".
    m = imaplib.IMAP4_SSL("localhost", port("RD_IMAPS_PORT"), ssl_context=ctx, timeout=TIMEOUT)
    typ, _ = m.login(ALICE, ALICE_PW)
    m.logout()
    return typ

def imap_raw_login_quoted_bob():
    # LOGIN with bob's password as an IMAP quoted string (\" and \\ escaped, raw UTF-8).
    quoted = '"' + BOB_PW.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raw = socket.create_connection((HOST, port("RD_IMAPS_PORT")), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=HOST) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(("a LOGIN %s %s\r\n" % (BOB, quoted)).encode("utf-8"))
        while True:
            line = f.readline()
            if not line or line.startswith(b"a "):
                break
        s.sendall(b"b LOGOUT\r\n")
    expect(line.startswith(b"a OK"), "got %r" % line)
    return line[:20].decode()

def imap_wrong(user, pw):
    def run():
        m = imap_starttls()
        try:
            m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode("utf-8"))
        except imaplib.IMAP4.error as e:
            expect("AUTHENTICATIONFAILED" in str(e), "unexpected NO text %s" % e)
            m.shutdown()
            # Without the per-IP penalty each failure is answered on Dovecot's ~500 ms
            # failure timer; with it the second one would wait >= 2 s more.
            return "NO %s" % e
        raise AssertionError("wrong password was accepted")
    return run

def timed(fn, limit_ms):
    def run():
        t0 = time.monotonic()
        r = fn()
        ms = (time.monotonic() - t0) * 1000
        expect(ms < limit_ms, "took %.0f ms (limit %d): per-IP auth penalty active?" % (ms, limit_ms))
        return r
    return run

check("IMAP %d STARTTLS (CA, IP SAN) LOGIN alice -> OK" % port("RD_IMAP_PORT"), imap_login_alice)
check("IMAP STARTTLS AUTHENTICATE PLAIN bob (UTF-8) -> OK", imap_auth_plain_bob)
check("IMAPS %d implicit TLS (DNS SAN localhost) LOGIN alice" % port("RD_IMAPS_PORT"), imaps_login_localhost)
check("IMAPS LOGIN bob with escaped quoted string -> OK", imap_raw_login_quoted_bob)
check("IMAP wrong password alice -> NO", timed(imap_wrong(ALICE, "wrong"), 1500))
check("IMAP wrong password bob right after -> NO, no penalty", timed(imap_wrong(BOB, BOB_PW + "x"), 1500))
check("IMAP unknown user right after -> NO, no penalty", timed(imap_wrong(NOBODY, "x"), 1500))
check("IMAP right password right after failures -> fast OK", timed(imap_login_alice, 1000))

# ---- LMTP -------------------------------------------------------------------------

def lmtp_rcpt():
    c = smtplib.LMTP(HOST, port("RD_LMTP_PORT"), timeout=TIMEOUT)
    code, _ = c.ehlo()          # smtplib's LMTP sends LHLO
    expect(code == 250, "LHLO %d" % code)
    expect(c.has_extn("starttls"), "LMTP does not offer STARTTLS")
    expect(not c.has_extn("auth"), "LMTP offers AUTH")
    code, _ = c.mail("")
    expect(code == 250, "MAIL FROM:<> %d" % code)
    a = c.rcpt(ALICE)
    n = c.rcpt(NOBODY)
    c.quit()
    expect(a[0] == 250, "alice: %r" % (a,))
    expect(n[0] == 550, "nosuchuser: %r" % (n,))
    return "alice %d, nosuchuser %d %s" % (a[0], n[0], n[1][:30].decode())

check("LMTP %d RCPT alice -> 250, nosuchuser -> 550" % port("RD_LMTP_PORT"), lmtp_rcpt)

# ---- Postfix ----------------------------------------------------------------------

def smtp(key="RD_SMTP_PORT", host=HOST):
    c = smtplib.SMTP(host, port(key), timeout=TIMEOUT)
    c.ehlo("check.example")
    return c

def postfix_rcpt():
    c = smtp()
    expect(not c.has_extn("auth"), "AUTH offered before STARTTLS")
    expect(c.has_extn("starttls"), "no STARTTLS")
    c.mail("")
    a, n, o = c.rcpt(ALICE), c.rcpt(NOBODY), c.rcpt("someone@other.test")
    c.quit()
    expect(a[0] == 250, "alice: %r" % (a,))
    expect(n[0] == 550, "nosuchuser: %r" % (n,))
    expect(o[0] == 554, "other domain should be relay-denied: %r" % (o,))
    return "alice %d, nosuchuser %d, other.test %d" % (a[0], n[0], o[0])

def postfix_auth():
    c = smtp()
    c.starttls(context=ctx)
    c.ehlo("check.example")
    expect(c.has_extn("auth"), "no AUTH after STARTTLS")
    code, _ = c.login(ALICE, ALICE_PW)
    c.quit()
    expect(code == 235, "alice: %d" % code)
    return "alice %d" % code

def postfix_auth_bob():
    c = smtp()
    c.starttls(context=ctx)
    c.ehlo("check.example")
    code, msg = c.docmd("AUTH", "PLAIN " + plain(BOB, BOB_PW))
    c.quit()
    expect(code == 235, "bob: %d %r" % (code, msg))
    return "bob %d" % code

def postfix_auth_wrong():
    c = smtp()
    c.starttls(context=ctx)
    c.ehlo("check.example")
    code, msg = c.docmd("AUTH", "PLAIN " + plain(ALICE, "wrong"))
    c.quit()
    expect(code == 535, "%d %r" % (code, msg))
    return "%d" % code

def policy_4xx():
    try:
        socket.create_connection((HOST, port("RD_POLICY_PORT")), timeout=2).close()
        raise AssertionError("something listens on the policy port %d" % port("RD_POLICY_PORT"))
    except ConnectionRefusedError:
        pass
    c = smtp("RD_POLICY_SMTP_PORT")
    c.mail("")
    t0 = time.monotonic()
    code, msg = c.rcpt(ALICE)
    ms = (time.monotonic() - t0) * 1000
    c.quit()
    expect(400 <= code < 500, "%d %r" % (code, msg))
    expect(ms < 3000, "4xx took %.0f ms" % ms)
    return "%d %s (%.0f ms)" % (code, msg.decode()[:40], ms)

def policy_spawn_4xx():
    # The spawn(8) service runs RD_POLICY_SPAWN_DIR/policy-remote-directory, which the
    # c-examples tests put there with a daemon behind it. Without the program Postfix
    # defers; with it but no daemon, the program itself defers (DEFER_IF_PERMIT).
    relay = os.path.join(env["RD_POLICY_SPAWN_DIR"], "policy-remote-directory")
    c = smtp("RD_POLICY_SPAWN_SMTP_PORT")
    c.mail("")
    code, msg = c.rcpt(ALICE)
    c.quit()
    expect(400 <= code < 500, "%d %r" % (code, msg))
    state = "relay installed" if os.path.exists(relay) else "no relay"
    return "%d %s (%s)" % (code, msg.decode()[:40], state)

def deliver():
    # End to end: Postfix accepts for alice, delivers over LMTP into Dovecot's store.
    token = uuid.uuid4().hex
    c = smtp()
    c.sendmail("", [ALICE], "From: check@example.org\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (ALICE, token))
    c.quit()
    deadline = time.monotonic() + 10
    while True:
        m = imap_starttls()
        m.login(ALICE, ALICE_PW)
        m.select("INBOX", readonly=True)
        typ, data = m.search(None, "SUBJECT", token)
        m.logout()
        if data and data[0]:
            return "found in INBOX"
        if time.monotonic() > deadline:
            raise AssertionError("not delivered within 10 s (see log/postfix.log)")
        time.sleep(0.2)

check("Postfix %d RCPT alice -> 250, nosuchuser -> 550, other -> 554" % port("RD_SMTP_PORT"), postfix_rcpt)
check("Postfix STARTTLS (CA verified) AUTH alice -> 235", postfix_auth)
check("Postfix STARTTLS AUTH PLAIN bob (UTF-8) -> 235", postfix_auth_bob)
check("Postfix STARTTLS AUTH wrong password -> 535", postfix_auth_wrong)
check("Postfix %d RCPT with no policy service -> 4xx" % port("RD_POLICY_SMTP_PORT"), policy_4xx)
check("Postfix %d RCPT through spawn(8), no daemon -> 4xx" % port("RD_POLICY_SPAWN_SMTP_PORT"),
      policy_spawn_4xx)
check("Postfix -> LMTP -> Dovecot delivery to alice", deliver)

# ---- Dovecot submission -------------------------------------------------------------

def submission(key, implicit):
    def run():
        if implicit:
            c = smtplib.SMTP_SSL("localhost", port(key), context=ctx, timeout=TIMEOUT)
            c.ehlo("check.example")
        else:
            c = smtp(key)
            c.starttls(context=ctx)
            c.ehlo("check.example")
        code, msg = c.docmd("AUTH", "PLAIN " + plain(BOB, BOB_PW))
        expect(code == 235, "AUTH bob %d %r" % (code, msg))
        # Relayed to Postfix: its answers come back.
        c.mail("bob@example.org")
        a, n = c.rcpt(ALICE), c.rcpt(NOBODY)
        c.quit()
        expect(a[0] == 250, "alice: %r" % (a,))
        expect(n[0] == 550, "nosuchuser: %r" % (n,))
        return "AUTH 235, relay: alice %d, nosuchuser %d" % (a[0], n[0])
    return run

check("submission %d STARTTLS AUTH bob, relayed RCPTs" % port("RD_SUBMISSION_PORT"),
      submission("RD_SUBMISSION_PORT", False))
check("submissions %d implicit TLS AUTH bob, relayed RCPTs" % port("RD_SUBMISSIONS_PORT"),
      submission("RD_SUBMISSIONS_PORT", True))

print("check: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
EOF
