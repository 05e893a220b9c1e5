"""Loading of libremote_directory and the ctypes declarations of its C API.

The library is looked up, in this order (the first that exists is loaded):

1. the file named by the environment variable ``REMOTE_DIRECTORY_LIB`` (an explicit choice
   always wins, even over the packaged copy);
2. the library packaged inside this package by ``pip install ./python``: setuptools-rust
   names it like an extension module, ``libremote_directory`` plus one of
   ``importlib.machinery.EXTENSION_SUFFIXES`` (e.g. ``.cpython-311-x86_64-linux-gnu.so``);
3. ``ctypes.util.find_library("remote_directory")`` (the system's library paths, e.g.
   ``/usr/local/lib`` after ``make install`` + ``ldconfig``);
4. ``target/release/libremote_directory.so`` of the repository this package's source
   lives in (the package used from a checkout, with ``python/`` on ``sys.path``).

Every function is declared with explicit ``argtypes`` and ``restype``: the handle is an
opaque ``c_void_p``, results are ``c_uint32`` and strings are ``c_char_p`` (NUL-terminated
byte strings; callers must reject embedded NUL bytes before calling, since ctypes would
silently truncate at the first one).

The library is loaded with :class:`ctypes.CDLL`, not :class:`ctypes.PyDLL`: CDLL releases
the GIL for the duration of every foreign call, so a thread blocked in network I/O inside
``directory_auth`` or ``directory_rcpt`` does not stop other Python threads
(``tests/test_threads.py`` proves it against the real servers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.machinery
import os
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["lib", "lib_path"]

ENV_VAR = "REMOTE_DIRECTORY_LIB"
_LIB_NAME = "remote_directory"
# The file setuptools-rust copies into the package (pyproject.toml, target
# "remote_directory.libremote_directory"), before its extension-module suffix.
_PACKAGED_STEM = "libremote_directory"


def _packaged() -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        cand = here / (_PACKAGED_STEM + suffix)
        if cand.is_file():
            return cand
    return None


def _repo_root() -> Path | None:
    # python/remote_directory/_ffi.py -> the repository root is two levels above the package
    # (editable install or python/ on sys.path); a copy in site-packages has no Cargo.toml there.
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "Cargo.toml").is_file() else None


def _dev_candidates(root: Path) -> Iterator[Path]:
    names = ["libremote_directory.so"]
    if sys.platform == "darwin":
        names = ["libremote_directory.dylib"]
    for name in names:
        yield root / "target" / "release" / name


def _find() -> tuple[str, str]:
    """Return (path, how) of the library to load, or raise ImportError."""
    tried = []
    env = os.environ.get(ENV_VAR)
    if env:
        return env, "$" + ENV_VAR
    tried.append("${} (unset)".format(ENV_VAR))

    packaged = _packaged()
    if packaged is not None:
        return str(packaged), "packaged"
    tried.append("{}/{}* (not in the package)".format(Path(__file__).resolve().parent, _PACKAGED_STEM))

    found = ctypes.util.find_library(_LIB_NAME)
    if found:
        return found, "ctypes.util.find_library"
    tried.append("ctypes.util.find_library({!r}) (not found)".format(_LIB_NAME))

    root = _repo_root()
    if root is None:
        tried.append("the repository's target/release (package not run from a source checkout)")
    else:
        for cand in _dev_candidates(root):
            if cand.is_file():
                return str(cand), "repository build"
            tried.append("{} (no such file)".format(cand))

    raise ImportError(
        "remote_directory: cannot find libremote_directory. Tried: "
        + "; ".join(tried)
        + ". Install the package with `pip install ./python` from the repository (it builds"
        + " and packages the library), or set "
        + ENV_VAR
        + " to the path of libremote_directory.so."
    )


# name: (restype, argtypes)
_SIGNATURES = {
    "directory_open": (
        ctypes.c_uint32,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)],
    ),
    "directory_open_str": (
        ctypes.c_uint32,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)],
    ),
    "directory_auth": (
        ctypes.c_uint32,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p],
    ),
    "directory_auth_from": (
        ctypes.c_uint32,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
    ),
    "directory_rcpt": (ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_char_p]),
    "directory_is_local_domain": (ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_char_p]),
    "directory_close": (None, [ctypes.c_void_p]),
    # The returned strings are owned by the library; c_char_p copies them into bytes at once.
    "directory_last_error": (ctypes.c_char_p, []),
    "directory_result_name": (ctypes.c_char_p, [ctypes.c_uint32]),
    "directory_version": (ctypes.c_char_p, []),
}


def _load() -> tuple[ctypes.CDLL, str]:
    path, how = _find()
    try:
        # CDLL (not PyDLL): the GIL is released while the foreign function runs.
        dll = ctypes.CDLL(path)
    except OSError as exc:
        raise ImportError(
            "remote_directory: cannot load libremote_directory from {} (found via {}): {}".format(
                path, how, exc
            )
        ) from exc
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(dll, name)
        except AttributeError as exc:
            raise ImportError(
                "remote_directory: {} does not export {}(); is it an old or foreign build?".format(
                    path, name
                )
            ) from exc
        fn.restype = restype
        fn.argtypes = argtypes
    return dll, path


lib, lib_path = _load()
