#!/usr/bin/env python3
"""The usual ways in Python, for bench/run.sh (rdbench starts this script once per run).

    python3 bench/usual.py SCENARIO THREADS SECONDS      (RD_SERVERS_ENV=DIR/env)

Every call opens a new connection with a new ssl context (as a script or a PAM helper
would), does its work with smtplib/imaplib, and closes. Prints one line:
    RESULT calls wall_s p50_ns p99_ns errors vmhwm_kib calls-over-20ms first-error
"""

import imaplib
import os
import smtplib
import ssl
import sys
import threading
import time

USER = "alice@example.org"
PASS = "alice-pass-1"
RCPT = "alice@example.org"


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


def context(env):
    return ssl.create_default_context(cafile=env["RD_CA"])


def rcpt(env, lmtp):
    port = int(env["RD_LMTP_PORT" if lmtp else "RD_SMTP_PORT"])
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    s = cls("127.0.0.1", port, timeout=10)
    try:
        s.ehlo()
        s.starttls(context=context(env))
        s.ehlo()
        code, _ = s.mail("")
        if code != 250:
            raise RuntimeError(f"MAIL -> {code}")
        code, msg = s.rcpt(RCPT)
        if code != 250:
            raise RuntimeError(f"RCPT -> {code} {msg!r}")
    finally:
        s.quit()


def imap_login(env, implicit):
    if implicit:
        m = imaplib.IMAP4_SSL(
            "127.0.0.1", int(env["RD_IMAPS_PORT"]), ssl_context=context(env), timeout=10
        )
    else:
        m = imaplib.IMAP4("127.0.0.1", int(env["RD_IMAP_PORT"]), timeout=10)
        m.starttls(ssl_context=context(env))
    try:
        m.login(USER, PASS)
    finally:
        m.logout()


def submission_login(env):
    s = smtplib.SMTP("127.0.0.1", int(env["RD_SUBMISSION_PORT"]), timeout=10)
    try:
        s.ehlo()
        s.starttls(context=context(env))
        s.ehlo()
        s.login(USER, PASS)
    finally:
        s.quit()


SCENARIOS = {
    "py.rcpt.lmtp": lambda env: rcpt(env, True),
    "py.rcpt.smtp": lambda env: rcpt(env, False),
    "py.auth.imap": lambda env: imap_login(env, False),
    "py.auth.imaps": lambda env: imap_login(env, True),
    "py.auth.submission": submission_login,
}


def vmhwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    name, threads, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    env = load_env(os.environ["RD_SERVERS_ENV"])
    op = SCENARIOS[name]
    barrier = threading.Barrier(threads + 1)
    lat = [[] for _ in range(threads)]
    errors = [0] * threads
    first = []
    ends = [0.0] * threads
    start = [0.0]

    def worker(i):
        barrier.wait()
        end_at = start[0] + secs
        mine = lat[i]
        while True:
            t0 = time.perf_counter()
            try:
                op(env)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors[i] += 1
                if not first:
                    first.append(f"{type(e).__name__}: {e}")
            t1 = time.perf_counter()
            mine.append(t1 - t0)
            if t1 >= end_at:
                break
        ends[i] = time.perf_counter()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in ts:
        t.join()
    all_lat = sorted(x for l in lat for x in l)
    n = len(all_lat)

    def q(p):
        if not n:
            return 0
        import math

        return int(all_lat[max(0, math.ceil(n * p) - 1)] * 1e9)

    wall = max(ends) - start[0]
    err = (first[0] if first else "-").replace("\n", " ")
    slow = sum(1 for x in all_lat if x > 0.020)
    print(f"RESULT {n} {wall:.6f} {q(0.5)} {q(0.99)} {sum(errors)} {vmhwm_kib()} {slow} {err}")


if __name__ == "__main__":
    main()
