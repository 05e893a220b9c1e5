"""The binding itself: loading, declarations, results, errors, input checks, close()."""

import ctypes
import os
import re
import subprocess
import sys
import threading

import pytest

import remote_directory as rd
from remote_directory import Directory, Result
from remote_directory import _ffi

from conftest import ALICE, ALICE_PASS, directory_toml

SIMPLE = directory_toml("one", "imap", 1, extra="")  # never connected to in these tests


def test_version_is_a_nonempty_string():
    v = rd.version()
    assert isinstance(v, str) and v.strip()
    assert re.search(r"\d+\.\d+", v), v


def test_result_values_are_abi():
    assert [(r.name, int(r)) for r in Result] == [
        ("OK", 0), ("REJECTED", 1), ("TEMPORARY", 2), ("UNSUPPORTED", 3),
        ("INVALID_INPUT", 4), ("CONFIG", 5), ("INTERNAL", 6),
    ]


def test_result_name_matches_enum():
    for r in Result:
        assert rd.result_name(r) == r.name
        assert rd.result_name(int(r)) == r.name
    # out of range: the library answers something, never crashes
    assert isinstance(rd.result_name(1234), str)


def test_every_function_is_declared():
    lib = _ffi.lib
    u32, p, s = ctypes.c_uint32, ctypes.c_void_p, ctypes.c_char_p
    out = ctypes.POINTER(ctypes.c_void_p)
    expected = {
        "directory_open": (u32, [s, s, out]),
        "directory_open_str": (u32, [s, s, out]),
        "directory_auth": (u32, [p, s, s]),
        "directory_auth_from": (u32, [p, s, s, s]),
        "directory_rcpt": (u32, [p, s]),
        "directory_is_local_domain": (u32, [p, s]),
        "directory_close": (None, [p]),
        "directory_last_error": (s, []),
        "directory_result_name": (s, [u32]),
        "directory_version": (s, []),
    }
    for name, (restype, argtypes) in expected.items():
        fn = getattr(lib, name)
        assert fn.restype is restype, name
        assert list(fn.argtypes) == argtypes, name
    assert isinstance(lib, ctypes.CDLL) and not isinstance(lib, ctypes.PyDLL)


def test_exception_hierarchy():
    for cls in (rd.Rejected, rd.Temporary, rd.Unsupported, rd.InvalidInput, rd.ConfigError,
                rd.InternalError):
        assert issubclass(cls, rd.DirectoryError)
    assert issubclass(rd.DirectoryError, Exception)


def test_bad_library_path_gives_clear_import_error(tmp_path):
    env = dict(os.environ, REMOTE_DIRECTORY_LIB=str(tmp_path / "nope.so"))
    proc = subprocess.run([sys.executable, "-c", "import remote_directory"], env=env,
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "nope.so" in proc.stderr, proc.stderr


# -- configuration errors (no server needed) ---------------------------------------------

def test_bad_toml_raises_config_error_naming_the_line():
    text = '[directory.x]\ntype = "imap"\nport = = 5\naddress = "127.0.0.1"\n'
    with pytest.raises(rd.ConfigError) as info:
        Directory.from_toml(text, "x")
    err = info.value
    assert err.result == Result.CONFIG
    assert re.search(r"line\s*3\b", err.message, re.I), err.message


def test_bad_toml_file_raises_config_error_naming_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[directory.x]\ntype = "imap"\naddress = "127.0.0.1"\nport = [\n', encoding="utf-8")
    with pytest.raises(rd.ConfigError) as info:
        Directory.open(path, "x")
    assert re.search(r"line\s*\d+", info.value.message, re.I), info.value.message


def test_unknown_directory_name():
    with pytest.raises(rd.ConfigError) as info:
        Directory.from_toml(SIMPLE, "nosuchdirectory")
    assert info.value.result == Result.CONFIG
    assert "nosuchdirectory" in info.value.message, info.value.message


def test_missing_file():
    with pytest.raises(rd.ConfigError) as info:
        Directory.open("/nonexistent/remote-directory.toml")
    assert info.value.message


def test_unknown_type():
    with pytest.raises(rd.ConfigError):
        Directory.from_toml(SIMPLE.replace('type = "imap"', 'type = "ldap"'), "one")


def test_name_may_be_none_with_exactly_one_directory(tmp_path):
    with Directory.from_toml(SIMPLE) as d:
        assert d.is_local_domain("example.org") is True
    path = tmp_path / "one.toml"
    path.write_text(SIMPLE, encoding="utf-8")
    with Directory.open(str(path)) as d:
        assert d.is_local_domain("example.org") is True
    with Directory.open(path, "one") as d:  # os.PathLike
        assert d.name == "one"


def test_name_none_with_two_directories_is_a_config_error():
    two = SIMPLE + "\n" + directory_toml("two", "imap", 2)
    with pytest.raises(rd.ConfigError):
        Directory.from_toml(two)


def test_last_error_is_read_on_the_calling_thread():
    with pytest.raises(rd.ConfigError) as info:
        Directory.from_toml("[[[", "x")
    assert info.value.message
    other = []
    t = threading.Thread(target=lambda: other.append(_ffi.lib.directory_last_error()))
    t.start()
    t.join()
    assert other == [b""], "another thread must not see this thread's error"


# -- input checks ------------------------------------------------------------------------

def test_nul_in_input_is_invalid_input_before_the_call():
    with Directory.from_toml(SIMPLE, "one") as d:
        for call in (
            lambda: d.auth("alice\0@example.org", "x"),
            lambda: d.auth(ALICE, "alice-pass-1\0garbage"),
            lambda: d.auth(b"alice\0", b"x"),
            lambda: d.rcpt("a\0b@example.org"),
            lambda: d.is_local_domain("example.org\0.evil"),
        ):
            with pytest.raises(rd.InvalidInput) as info:
                call()
            assert info.value.result == Result.INVALID_INPUT
            assert "NUL" in info.value.message
    with pytest.raises(rd.InvalidInput):
        Directory.from_toml(SIMPLE + "\0", "one")
    with pytest.raises(rd.InvalidInput):
        Directory.from_toml(SIMPLE, "o\0ne")
    with pytest.raises(rd.InvalidInput):
        Directory.open("/tmp/x\0y")


def test_wrong_argument_types():
    with Directory.from_toml(SIMPLE, "one") as d:
        with pytest.raises(TypeError):
            d.auth(None, "x")
        with pytest.raises(TypeError):
            d.rcpt(42)


def test_lone_surrogate_is_invalid_input():
    with Directory.from_toml(SIMPLE, "one") as d:
        with pytest.raises(rd.InvalidInput):
            d.is_local_domain("\udcff.org")


# -- close -------------------------------------------------------------------------------

def test_close_twice_and_calls_after_close():
    d = Directory.from_toml(SIMPLE, "one")
    assert not d.closed
    d.close()
    d.close()
    assert d.closed
    for call in (lambda: d.auth(ALICE, ALICE_PASS), lambda: d.rcpt(ALICE),
                 lambda: d.is_local_domain("example.org")):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        with d:
            pass


def test_context_manager_closes():
    with Directory.from_toml(SIMPLE, "one") as d:
        assert d.is_local_domain("example.org")
    assert d.closed
    with pytest.raises(ValueError):
        d.is_local_domain("example.org")


def test_concurrent_close_is_harmless():
    d = Directory.from_toml(SIMPLE, "one")
    threads = [threading.Thread(target=d.close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.closed


def test_directory_cannot_be_built_without_a_handle():
    with pytest.raises(ValueError):
        Directory(None)


def test_library_lookup_order_without_env(tmp_path):
    """Without $REMOTE_DIRECTORY_LIB: find_library, else the checkout's target/release."""
    import ctypes.util
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent  # python/
    root = src.parent
    env = {k: v for k, v in os.environ.items() if k != "REMOTE_DIRECTORY_LIB"}
    env["PYTHONPATH"] = str(src)
    proc = subprocess.run([sys.executable, "-c", "import remote_directory as r; print(r.lib_path)"],
                          env=env, capture_output=True, text=True, cwd=str(tmp_path))
    system = ctypes.util.find_library("remote_directory")
    dev = root / "target" / "release" / "libremote_directory.so"
    if system:
        assert proc.stdout.strip() == system, proc.stderr
    elif dev.is_file():
        assert proc.stdout.strip() == str(dev), proc.stderr
    else:
        assert "cannot find libremote_directory" in proc.stderr, proc.stderr
