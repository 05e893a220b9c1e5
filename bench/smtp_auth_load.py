#!/usr/bin/env python3
"""SMTP AUTH load on one Postfix port: THREADS clients, each doing whole sessions (connect,
EHLO, AUTH PLAIN, QUIT) in a loop for SECS seconds. Prints one line:

    logins=N per_s=R median_ms=M p90_ms=P failures=F

Used by bench/password-protocols.sh; standard library only. Every session must end in 235
(a failure is counted and reported, never hidden).

    smtp_auth_load.py PORT USER PASSWORD THREADS SECS
"""
import base64
import socket
import statistics
import sys
import threading
import time


def session(port, auth_line):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        if not f.readline().startswith(b"220"):
            return None
        s.sendall(b"EHLO bench.test\r\n")
        while True:
            line = f.readline()
            if not line.startswith(b"250"):
                return None
            if line[3:4] == b" ":
                break
        s.sendall(auth_line)
        reply = f.readline()
        s.sendall(b"QUIT\r\n")
        if not reply.startswith(b"235"):
            return None
    return time.perf_counter() - start


def main():
    port, user, password, threads, secs = sys.argv[1:6]
    port, threads, secs = int(port), int(threads), float(secs)
    message = b"\0" + user.encode() + b"\0" + password.encode()
    auth_line = b"AUTH PLAIN " + base64.b64encode(message) + b"\r\n"
    times, failures, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + secs

    def worker():
        while time.monotonic() < deadline:
            t = session(port, auth_line)
            with lock:
                if t is None:
                    failures[0] += 1
                else:
                    times.append(t)

    began = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - began
    times.sort()
    median = statistics.median(times) * 1000 if times else float("nan")
    p90 = times[int(len(times) * 0.9)] * 1000 if times else float("nan")
    print("logins=%d per_s=%.1f median_ms=%.2f p90_ms=%.2f failures=%d"
          % (len(times), len(times) / elapsed, median, p90, failures[0]))


if __name__ == "__main__":
    main()
