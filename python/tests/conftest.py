"""Fixtures: the real Dovecot/Postfix test servers, described by $RD_SERVERS_ENV.

Tests that need the servers FAIL (never skip) when the variable is unset or the servers
cannot be reached.
"""

import json
import os
import socket

import pytest

HOW_TO_START = (
    "start the test servers from the repository root with "
    "`tests/servers/servers.sh start /tmp/rd-py && export RD_SERVERS_ENV=/tmp/rd-py/env`"
)

ALICE = "alice@example.org"
ALICE_PASS = "alice-pass-1"
BOB = "bob@example.org"
BOB_PASS = 'p"a\\ss w\u00f6rd'  # p"a\ss wörd: quote, backslash, space, non-ASCII
NOBODY = "nosuchuser@example.org"


def _read_env_file(path):
    env = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            key = key.strip()
            if key.startswith("export "):
                key = key[len("export "):].strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key] = value
    return env


@pytest.fixture(scope="session")
def servers():
    """The env file's keys as a dict; fails the test when the servers are not there."""
    path = os.environ.get("RD_SERVERS_ENV")
    if not path:
        pytest.fail("RD_SERVERS_ENV is unset: " + HOW_TO_START, pytrace=False)
    if not os.path.isfile(path):
        pytest.fail("RD_SERVERS_ENV={} is not a file: {}".format(path, HOW_TO_START), pytrace=False)
    env = _read_env_file(path)
    required = [
        "RD_CA", "RD_IMAP_PORT", "RD_IMAPS_PORT", "RD_LMTP_PORT", "RD_SUBMISSION_PORT",
        "RD_SUBMISSIONS_PORT", "RD_SMTP_PORT",
    ]
    missing = [k for k in required if k not in env]
    if missing:
        pytest.fail("{} lacks {}: {}".format(path, ", ".join(missing), HOW_TO_START), pytrace=False)
    for key in required[1:]:
        port = int(env[key])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError as exc:
            pytest.fail(
                "cannot reach {} (127.0.0.1:{}): {}; {}".format(key, port, exc, HOW_TO_START),
                pytrace=False,
            )
    return env


def _q(value):
    # JSON string syntax is valid TOML basic-string syntax for these values.
    return json.dumps(value)


def directory_toml(name, kind, port, ca=None, implicit=False, extra="", domains=("example.org",)):
    """One [directory.NAME] section."""
    lines = [
        "[directory.{}]".format(name),
        "type = {}".format(_q(kind)),
        'address = "127.0.0.1"',
        "port = {}".format(int(port)),
        'timeout = "5s"',
    ]
    if extra:
        lines.append(extra.strip())
    lines += [
        "[directory.{}.tls]".format(name),
        "implicit = {}".format("true" if implicit else "false"),
        "allow-invalid-certs = false",
    ]
    if ca:
        lines.append("ca-file = {}".format(_q(ca)))
    lines += [
        "[directory.{}.lookup]".format(name),
        "domains = [{}]".format(", ".join(_q(d) for d in domains)),
        "",
    ]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def config_text(servers):
    """A configuration with one directory per server port."""
    ca = servers["RD_CA"]
    parts = [
        directory_toml("imap", "imap", servers["RD_IMAP_PORT"], ca),
        directory_toml("imaps", "imap", servers["RD_IMAPS_PORT"], ca, implicit=True),
        directory_toml("submission", "smtp", servers["RD_SUBMISSION_PORT"], ca),
        directory_toml("submissions", "smtp", servers["RD_SUBMISSIONS_PORT"], ca, implicit=True),
        directory_toml("smtp", "smtp", servers["RD_SMTP_PORT"], ca),
        directory_toml("lmtp", "lmtp", servers["RD_LMTP_PORT"], ca),
    ]
    return "\n".join(parts)


@pytest.fixture(scope="session")
def config_file(config_text, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "remote-directory.toml"
    path.write_text(config_text, encoding="utf-8")
    return path


@pytest.fixture
def open_dir(config_text):
    """open_dir(name) -> Directory from the full config; all are closed after the test."""
    from remote_directory import Directory

    opened = []

    def _open(name):
        d = Directory.from_toml(config_text, name)
        opened.append(d)
        return d

    yield _open
    for d in opened:
        d.close()


def closed_port():
    """A loopback TCP port on which nothing listens (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
