"""Threads: the GIL is released during calls; one handle shared by 8 threads; close()."""

import threading
import time

import pytest

import remote_directory as rd
from remote_directory import Directory

from conftest import ALICE, ALICE_PASS, BOB, BOB_PASS, NOBODY, directory_toml

THREADS = 8


def _imap(servers, max_conn=16):
    text = directory_toml(
        "imap", "imap", servers["RD_IMAP_PORT"], servers["RD_CA"],
        extra="[directory.imap.pool]\nmax-connections = {}".format(max_conn),
    )
    return Directory.from_toml(text, "imap")


def test_gil_is_released_parallel_wrong_passwords(servers):
    """8 wrong-password auths in 8 threads take far less than 8 x one of them.

    Dovecot answers a wrong password after ~500 ms. If the GIL were held during the call
    (PyDLL), the 8 calls would run one after the other: wall >= 8 x single.
    """
    with _imap(servers) as d:
        assert d.auth(ALICE, ALICE_PASS) is True  # warm up (TLS config, first connection)
        # Dovecot 2.3 answers failures on a 500 ms timer, so the first one after start can
        # come early: take the median of three sequential wrong-password calls.
        singles = []
        for i in range(3):
            t0 = time.monotonic()
            assert d.auth(ALICE, "wrong-{}".format(i)) is False
            singles.append(time.monotonic() - t0)
        single = sorted(singles)[1]
        assert single > 0.2, "a wrong password should take ~500 ms at Dovecot; took {}".format(singles)

        barrier = threading.Barrier(THREADS + 1)
        results = [None] * THREADS

        def worker(i):
            barrier.wait()
            try:
                results[i] = d.auth(ALICE, "wrong-parallel-{}".format(i))
            except Exception as exc:  # recorded, checked below
                results[i] = exc

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.monotonic()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0

    print("\nGIL: single wrong-password auth {:.3f}s (of {}); {} in parallel {:.3f}s (ratio {:.2f})".format(
        single, ", ".join("{:.3f}".format(x) for x in singles), THREADS, wall, wall / single))
    assert results == [False] * THREADS, results
    assert wall < 4 * single, "8 parallel calls took {:.3f}s, single {:.3f}s".format(wall, single)


def test_gil_is_released_python_runs_during_a_call(servers):
    """While one thread waits ~500 ms inside directory_auth, this thread keeps running Python."""
    with _imap(servers) as d:
        assert d.auth(ALICE, ALICE_PASS) is True
        assert d.auth(ALICE, "wrong-prime") is False  # align with Dovecot's 500 ms failure timer
        started, done = threading.Event(), threading.Event()
        out = []

        def worker():
            started.set()
            out.append(d.auth(ALICE, "wrong-gil"))
            done.set()

        t = threading.Thread(target=worker)
        t.start()
        started.wait()
        first = last = time.monotonic()
        max_gap, n = 0.0, 0
        while not done.is_set():
            now = time.monotonic()
            max_gap = max(max_gap, now - last)
            last = now
            n += 1
        t.join()
    span = last - first
    print("\nGIL: main thread ran {} iterations over {:.3f}s during the call; max gap {:.4f}s".format(
        n, span, max_gap))
    assert out == [False]
    assert span > 0.2, span
    # Holding the GIL would freeze this loop for the whole call (~500 ms).
    assert max_gap < 0.2, max_gap


def test_eight_threads_share_one_handle_mixed_auth_rcpt(open_dir):
    d = open_dir("smtp")
    ops = [
        ("auth alice ok", lambda: d.auth(ALICE, ALICE_PASS), True),
        ("rcpt alice", lambda: d.rcpt(ALICE), True),
        ("auth bob ok", lambda: d.auth(BOB, BOB_PASS), True),
        ("rcpt nobody", lambda: d.rcpt(NOBODY), False),
        ("auth alice wrong", lambda: d.auth(ALICE, "wrong"), False),
        ("rcpt bob", lambda: d.rcpt(BOB), True),
        ("auth nobody", lambda: d.auth(NOBODY, ALICE_PASS), False),
        ("domain", lambda: d.is_local_domain("example.org"), True),
        ("rcpt crlf", lambda: d.rcpt("alice@example.org\r\nRSET"), rd.InvalidInput),
        ("foreign domain", lambda: d.is_local_domain("example.net"), False),
    ]
    rounds = 3
    failures, counts = [], [0] * THREADS
    barrier = threading.Barrier(THREADS)

    def worker(i):
        barrier.wait()
        for r in range(rounds):
            for k in range(len(ops)):
                label, call, expected = ops[(i + k + r) % len(ops)]
                try:
                    got = call()
                except Exception as exc:  # noqa: BLE001
                    got = exc
                if isinstance(expected, type):
                    ok = isinstance(got, expected) and bool(got.message)
                else:
                    ok = got is expected
                if not ok:
                    failures.append("thread {} round {} {}: expected {!r}, got {!r}".format(
                        i, r, label, expected, got))
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\nmixed: {} calls in {} threads in {:.2f}s".format(sum(counts), THREADS, time.monotonic() - t0))
    assert failures == []
    assert counts == [rounds * len(ops)] * THREADS


def test_close_waits_for_calls_in_progress(servers):
    d = _imap(servers)
    assert d.auth(ALICE, ALICE_PASS) is True
    out, finished = [], []

    def worker():
        out.append(d.auth(ALICE, "wrong-close"))
        finished.append(time.monotonic())

    t = threading.Thread(target=worker)
    t.start()
    deadline = time.monotonic() + 5
    while d._active == 0 and not finished and time.monotonic() < deadline:
        time.sleep(0.001)
    assert d._active == 1 or finished, "worker never entered the call"
    d.close()
    closed_at = time.monotonic()
    t.join()
    assert out == [False]
    assert finished and finished[0] <= closed_at + 0.05
    with pytest.raises(ValueError):
        d.auth(ALICE, ALICE_PASS)


def test_calls_racing_close_get_an_answer_or_value_error(servers):
    d = _imap(servers)
    errors, answers = [], []
    barrier = threading.Barrier(THREADS + 1)

    def worker():
        barrier.wait()
        for _ in range(3):
            try:
                answers.append(d.is_local_domain("example.org"))
                answers.append(d.auth(ALICE, ALICE_PASS))
            except ValueError:
                return
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.05)
    d.close()
    for t in threads:
        t.join()
    assert errors == []
    assert all(a is True for a in answers)
