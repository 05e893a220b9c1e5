"""Python bindings (ctypes) for libremote_directory.

Ask a remote IMAP, SMTP or LMTP server whether a password is right and whether a
recipient exists::

    from remote_directory import Directory

    with Directory.open("/etc/remote-directory.toml", "imap") as d:
        if d.auth("alice@example.org", "secret"):
            ...

Strings (``str``) are encoded as UTF-8; ``bytes`` are passed to the library unchanged.
A NUL byte cannot cross the C API (ctypes would silently cut the string at it), so any
argument containing one raises :class:`InvalidInput` here, before the library is called;
every other check (CR/LF, invalid UTF-8 in bytes, ...) is the library's.

Threads: one :class:`Directory` may be shared by any number of threads. The library is
loaded with ``ctypes.CDLL``, which releases the GIL during each foreign call, so calls
that wait on the network run in parallel. :meth:`Directory.close` waits until no other
thread is inside a call on the same handle (see its docstring).
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import os
import threading
from typing import Callable, Literal, Optional, Union


from ._ffi import lib as _lib
from ._ffi import lib_path

__all__ = [
    "Result",
    "DirectoryError",
    "Rejected",
    "Temporary",
    "Unsupported",
    "InvalidInput",
    "ConfigError",
    "InternalError",
    "Directory",
    "version",
    "result_name",
    "lib_path",
]

__version__ = "0.1.0"

#: What the string arguments accept: ``str`` (encoded as UTF-8) or bytes-like (unchanged).
Text = Union[str, bytes, bytearray, memoryview]
#: A configuration file's path, as ``open()`` accepts it.
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class Result(enum.IntEnum):
    """``directory_result`` values of the C API (these numbers are ABI)."""

    OK = 0
    REJECTED = 1
    TEMPORARY = 2
    UNSUPPORTED = 3
    INVALID_INPUT = 4
    CONFIG = 5
    INTERNAL = 6


class DirectoryError(Exception):
    """A call returned a result other than OK (or REJECTED where that means False).

    ``result`` is the :class:`Result` (a plain ``int`` if the library returned a value this
    module does not know) and ``message`` is ``directory_last_error()``, read on the calling
    thread right after the failing call.
    """

    result: Result | int
    message: str

    def __init__(self, result: int, message: str = "") -> None:
        try:
            result = Result(result)
        except ValueError:
            pass
        self.result = result
        self.message = message
        name = result.name if isinstance(result, Result) else "RESULT_{}".format(result)
        super().__init__("{}: {}".format(name, message) if message else name)


class Rejected(DirectoryError):
    """REJECTED where a refusal is an error (opening a directory never returns it)."""


class Temporary(DirectoryError):
    """TEMPORARY: the server could not be reached or answered with a temporary failure."""


class Unsupported(DirectoryError):
    """UNSUPPORTED: the directory's protocol cannot answer this question (RCPT over IMAP)."""


class InvalidInput(DirectoryError):
    """INVALID_INPUT: an argument was refused (NUL, CR/LF, bad UTF-8, too long, ...)."""


class ConfigError(DirectoryError):
    """CONFIG: the configuration is invalid or does not define the named directory."""


class InternalError(DirectoryError):
    """INTERNAL: a bug or resource failure inside the library."""


_EXCEPTIONS: dict[int, type[DirectoryError]] = {
    Result.REJECTED: Rejected,
    Result.TEMPORARY: Temporary,
    Result.UNSUPPORTED: Unsupported,
    Result.INVALID_INPUT: InvalidInput,
    Result.CONFIG: ConfigError,
    Result.INTERNAL: InternalError,
}


def _last_error() -> str:
    raw = _lib.directory_last_error()
    return raw.decode("utf-8", "replace") if raw else ""


def _error(rc: int, message: str) -> DirectoryError:
    return _EXCEPTIONS.get(rc, DirectoryError)(rc, message)


def _to_bytes(value: Text | None, what: str, allow_none: bool = False) -> bytes | None:
    """Encode a str as UTF-8 or take bytes unchanged; refuse NUL bytes (InvalidInput)."""
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidInput(Result.INVALID_INPUT, "{} is not valid Unicode: {}".format(what, exc)) from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError("{} must be str or bytes, not {}".format(what, type(value).__name__))
    if b"\0" in data:
        # ctypes would pass only the part before the NUL: refuse it here instead.
        raise InvalidInput(Result.INVALID_INPUT, "{} contains a NUL byte".format(what))
    return data


def version() -> str:
    """The library's version string (``directory_version()``)."""
    raw = _lib.directory_version()
    return raw.decode("utf-8", "replace") if raw else ""


def result_name(result: int) -> str:
    """The name of a result value (``directory_result_name()``), e.g. ``"REJECTED"``."""
    raw = _lib.directory_result_name(int(result) & 0xFFFFFFFF)
    return raw.decode("utf-8", "replace") if raw else ""


class Directory:
    """An open directory: a thread-safe handle on one ``[directory.NAME]`` of a configuration.

    Create it with :meth:`open` or :meth:`from_toml`. Use it as a context manager or call
    :meth:`close`; after closing, every method raises :class:`ValueError`.
    """

    def __init__(self, _handle: Optional[int], _name: Optional[str] = None) -> None:
        if not _handle:
            raise ValueError("use Directory.open() or Directory.from_toml()")
        self._handle: Optional[int] = _handle
        self._name = _name
        # Readers/writer guard: calls are readers (any number at once), close() is the
        # writer. _active counts the calls in progress; close() marks the handle closing
        # (so no new call starts), waits for _active == 0, then frees the handle.
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closing = False

    # -- construction -------------------------------------------------------------------

    @classmethod
    def _new(cls, fn: Callable[..., int], first: bytes | None, name: bytes | None) -> Directory:
        out = ctypes.c_void_p()
        rc = fn(first, name, ctypes.byref(out))
        if rc != Result.OK:
            raise _error(rc, _last_error())
        if not out.value:
            raise InternalError(Result.INTERNAL, "library returned OK but no handle")
        return cls(out.value, None if name is None else name.decode("utf-8", "replace"))

    @classmethod
    def open(cls, path: PathLike, name: Text | None = None) -> Directory:
        """Open directory ``name`` of the TOML file at ``path``.

        ``name`` may be None when the file defines exactly one directory.
        Raises :class:`ConfigError` for a bad file or an unknown name.
        """
        raw = os.fspath(path)
        if isinstance(raw, str):
            raw = os.fsencode(raw)
        if b"\0" in raw:
            raise InvalidInput(Result.INVALID_INPUT, "path contains a NUL byte")
        return cls._new(_lib.directory_open, raw, _to_bytes(name, "name", allow_none=True))

    @classmethod
    def from_toml(cls, text: Text, name: Text | None = None) -> Directory:
        """Open directory ``name`` of a configuration given as TOML text (str or bytes)."""
        return cls._new(
            _lib.directory_open_str,
            _to_bytes(text, "config"),
            _to_bytes(name, "name", allow_none=True),
        )

    # -- calls ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., int], *args: bytes | None) -> tuple[int, str]:
        """Run fn(handle, *args) as a reader; return (rc, message of this thread)."""
        with self._cond:
            if self._closing:
                raise ValueError("operation on a closed Directory")
            self._active += 1
            handle = self._handle
        try:
            rc = fn(handle, *args)  # GIL released here (CDLL)
            # Thread-local in the library: read on this thread before anything else runs here.
            message = _last_error() if rc != Result.OK else ""
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()
        return rc, message

    def _boolean(self, fn: Callable[..., int], *args: bytes | None) -> bool:
        rc, message = self._call(fn, *args)
        if rc == Result.OK:
            return True
        if rc == Result.REJECTED:
            return False
        raise _error(rc, message)

    def auth(
        self,
        user: Text,
        secret: Text,
        client_ip: Text | ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    ) -> bool:
        """True if the server accepts ``secret`` for ``user``, False if it refuses it.

        ``client_ip`` is the address the login came from (str, bytes or an
        ``ipaddress`` address; None when unknown): what ``throttle.client`` counts and
        ``forward.client-ip`` tells the server. Anything but an IP address raises
        :class:`InvalidInput`, and nothing is sent.

        Raises :class:`Temporary` (also when a ``throttle.*`` budget is used up),
        :class:`Unsupported`, :class:`InvalidInput` or :class:`InternalError` otherwise.
        (A Python str holding the secret cannot be wiped from memory; the library wipes its
        own copies.)
        """
        if isinstance(client_ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            client_ip = str(client_ip)
        return self._boolean(
            _lib.directory_auth_from,
            _to_bytes(user, "user"),
            _to_bytes(secret, "secret"),
            _to_bytes(client_ip, "client_ip", allow_none=True),
        )

    def rcpt(self, address: Text) -> bool:
        """True if the server accepts ``address`` as a recipient, False if it refuses it."""
        return self._boolean(_lib.directory_rcpt, _to_bytes(address, "address"))

    def is_local_domain(self, domain: Text) -> bool:
        """True if ``domain`` is one of the directory's ``lookup.domains``."""
        return self._boolean(_lib.directory_is_local_domain, _to_bytes(domain, "domain"))

    # -- closing -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def name(self) -> str | None:
        return self._name

    def close(self) -> None:
        """Free the handle. Harmless if already closed.

        New calls raise ValueError as soon as close() starts; close() then blocks until
        every call already running on this handle in other threads has returned (at most
        the configured timeouts), so the library never sees the handle freed under a call.
        Do not call close() from inside a call of the same handle (there are no callbacks,
        so this cannot happen through this module).
        """
        with self._cond:
            if self._closing:
                # Closed, or being closed by another thread: wait until that has finished.
                self._cond.wait_for(lambda: self._handle is None)
                return
            self._closing = True
            self._cond.wait_for(lambda: self._active == 0)
            handle, self._handle = self._handle, None
            try:
                _lib.directory_close(handle)
            finally:
                self._cond.notify_all()

    def __enter__(self) -> Directory:
        if self._closing:
            raise ValueError("operation on a closed Directory")
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:
        # Best effort at garbage collection; nothing can be inside a call (calls hold self).
        try:
            if getattr(self, "_handle", None) is not None and not self._closing:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return "<remote_directory.Directory {!r} {}>".format(self._name, state)

