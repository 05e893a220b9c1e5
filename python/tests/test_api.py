"""The binding itself: loading, declarations, results, errors, input checks, close()."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

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


# -- where the library comes from (python/README.md "Install") ------------------------------

PACKAGE_DIR = Path(rd.__file__).resolve().parent
SOURCE_DIR = Path(__file__).resolve().parent.parent  # python/ of the checkout


def test_tests_run_against_the_installed_package_and_its_library():
    # run.sh installs the wheel and unsets REMOTE_DIRECTORY_LIB: this is what a user gets.
    assert "REMOTE_DIRECTORY_LIB" not in os.environ
    assert SOURCE_DIR not in PACKAGE_DIR.parents, PACKAGE_DIR
    lib = Path(rd.lib_path)
    assert lib.parent == PACKAGE_DIR, lib
    assert lib.name.startswith("libremote_directory") and lib.suffix == ".so", lib
    assert (PACKAGE_DIR / "py.typed").is_file()


def _import_in_child(pythonpath, env_lib=None, ld_path=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REMOTE_DIRECTORY_LIB", "LD_LIBRARY_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(pythonpath)
    if env_lib is not None:
        env["REMOTE_DIRECTORY_LIB"] = str(env_lib)
    if ld_path is not None:
        env["LD_LIBRARY_PATH"] = str(ld_path)
    code = "import remote_directory as r; print(r.lib_path); print(r.version())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=str(pythonpath))


def _system_library_outside_the_test():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    code = "import ctypes.util; print(ctypes.util.find_library('remote_directory') or '')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


# (case, REMOTE_DIRECTORY_LIB set, library in the package, library on the system path, loaded)
LOOKUP_ORDER = [
    ("variable wins over everything", True, True, True, "variable"),
    ("packaged before the system's", False, True, True, "packaged"),
    ("system when none is packaged", False, False, True, "system"),
    ("nothing found", False, False, False, None),
]


@pytest.mark.parametrize("case,env_set,packaged,system,expected", LOOKUP_ORDER,
                         ids=[c[0] for c in LOOKUP_ORDER])
def test_library_lookup_order(tmp_path, case, env_set, packaged, system, expected):
    """Each step of the documented order, on a copy of the installed package.

    The copy lives outside any checkout, so the last step (a checkout's target/release)
    never applies; "the system" is a directory on LD_LIBRARY_PATH, which
    ctypes.util.find_library searches on Linux.
    """
    real = Path(rd.lib_path)
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "remote_directory",
                    ignore=shutil.ignore_patterns("__pycache__"))
    copied = site / "remote_directory" / real.name
    if not packaged:
        copied.unlink()
    sysdir = tmp_path / "system"
    sysdir.mkdir()
    if system:
        # As `make install` lays it out: the file under its SONAME, and the link name.
        (sysdir / "libremote_directory.so.0").symlink_to(real)
        (sysdir / "libremote_directory.so").symlink_to("libremote_directory.so.0")
    chosen = tmp_path / "chosen" / "libremote_directory.so"
    chosen.parent.mkdir()
    chosen.symlink_to(real)

    proc = _import_in_child(site, env_lib=chosen if env_set else None, ld_path=sysdir)
    if expected is None and _system_library_outside_the_test():
        expected = "system"  # this machine has one installed (ldconfig): that step answers
    if expected is None:
        assert proc.returncode != 0
        assert "cannot find libremote_directory" in proc.stderr, proc.stderr
        # The message names every place it looked.
        for place in ("$REMOTE_DIRECTORY_LIB", "not in the package", "find_library"):
            assert place in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    loaded, version = proc.stdout.split()
    assert version == rd.version()
    if expected == "variable":
        assert loaded == str(chosen)
    elif expected == "packaged":
        assert loaded == str(copied)
    else:
        # find_library returns a file name that the dynamic linker resolves.
        assert "/" not in loaded and loaded.startswith("libremote_directory.so"), loaded


def test_public_api_is_fully_annotated():
    """py.typed promises type hints: every public callable annotates all it takes and returns."""
    import inspect
    import typing

    callables = [rd.version, rd.result_name, rd.DirectoryError.__init__]
    callables += [getattr(Directory, n) for n in ("open", "from_toml", "auth", "rcpt",
                                                  "is_local_domain", "close", "__enter__",
                                                  "__exit__")]
    callables += [Directory.closed.fget, Directory.name.fget]
    for fn in callables:
        hints = typing.get_type_hints(fn)  # resolves every annotation: none may be broken
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.name not in ("self", "cls")]
        missing = [p.name for p in params if p.name not in hints]
        assert not missing and "return" in hints, (fn.__qualname__, missing, hints)
