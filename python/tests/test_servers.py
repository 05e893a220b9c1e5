"""Against the real Dovecot and Postfix of tests/servers/servers.sh ($RD_SERVERS_ENV)."""

import re

import pytest

import remote_directory as rd
from remote_directory import Directory, Result

from conftest import ALICE, ALICE_PASS, BOB, BOB_PASS, NOBODY, closed_port, directory_toml

AUTH_DIRS = ["imap", "imaps", "submission", "submissions", "smtp"]


@pytest.mark.parametrize("name", AUTH_DIRS)
def test_auth_ok_wrong_unknown(open_dir, name):
    d = open_dir(name)
    assert d.auth(ALICE, ALICE_PASS) is True
    assert d.auth(ALICE, "not-" + ALICE_PASS) is False
    assert d.auth(NOBODY, ALICE_PASS) is False
    assert d.auth(ALICE, ALICE_PASS) is True  # the handle still works after refusals


@pytest.mark.parametrize("name", AUTH_DIRS)
def test_bob_password_with_quote_backslash_space_and_umlaut(open_dir, name):
    d = open_dir(name)
    assert d.auth(BOB, BOB_PASS) is True
    assert d.auth(BOB.encode(), BOB_PASS.encode("utf-8")) is True  # bytes as-is
    assert d.auth(BOB, BOB_PASS.replace("\\", "")) is False
    assert d.auth(BOB, BOB_PASS.replace("\u00f6", "o")) is False


def test_auth_from_config_file(servers, config_file):
    with Directory.open(config_file, "imap") as d:
        assert d.auth(ALICE, ALICE_PASS) is True


@pytest.mark.parametrize("name", ["lmtp", "smtp"])
def test_rcpt_existing_and_unknown(open_dir, name):
    d = open_dir(name)
    assert d.rcpt(ALICE) is True
    assert d.rcpt(BOB) is True
    assert d.rcpt(NOBODY) is False
    assert d.rcpt(ALICE) is True


def test_rcpt_on_imap_is_unsupported(open_dir):
    d = open_dir("imap")
    with pytest.raises(rd.Unsupported) as info:
        d.rcpt(ALICE)
    assert info.value.result == Result.UNSUPPORTED
    assert info.value.message


def test_auth_on_lmtp_without_auth_is_unsupported(open_dir):
    # Dovecot's LMTP offers no AUTH: the server cannot check passwords, which is neither an
    # answer (True/False) nor worth retrying.
    d = open_dir("lmtp")
    with pytest.raises(rd.Unsupported) as info:
        d.auth(ALICE, ALICE_PASS)
    assert info.value.result == Result.UNSUPPORTED, info.value
    assert "AUTH" in info.value.message, info.value.message


def test_is_local_domain(open_dir):
    d = open_dir("imap")
    assert d.is_local_domain("example.org") is True
    assert d.is_local_domain(b"example.org") is True
    assert d.is_local_domain("EXAMPLE.Org") is True
    assert d.is_local_domain("example.org.") is True  # the absolute form is the same domain
    assert d.is_local_domain("example.com") is False
    assert d.is_local_domain("sub.example.org") is False
    assert d.is_local_domain("example.org.evil") is False
    assert d.is_local_domain("xexample.org") is False


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.auth("alice@example.org\r\nA1 LOGOUT", ALICE_PASS),
        lambda d: d.auth(ALICE, "alice-pass-1\r\n"),
        lambda d: d.auth("alice@example.org\n", ALICE_PASS),
        lambda d: d.rcpt("alice@example.org\r\nRSET"),
        lambda d: d.rcpt("alice@example.org\r"),
        lambda d: d.is_local_domain("example.org\r\n"),
    ],
    ids=["user-crlf", "secret-crlf", "user-lf", "rcpt-crlf", "rcpt-cr", "domain-crlf"],
)
def test_crlf_is_invalid_input(open_dir, call):
    d = open_dir("smtp")
    with pytest.raises(rd.InvalidInput) as info:
        call(d)
    assert info.value.result == Result.INVALID_INPUT
    assert info.value.message


def test_crlf_leaves_the_handle_usable(open_dir):
    d = open_dir("smtp")
    with pytest.raises(rd.InvalidInput):
        d.rcpt("x@example.org\r\nRCPT TO:<alice@example.org>")
    assert d.rcpt(NOBODY) is False
    assert d.auth(ALICE, ALICE_PASS) is True


@pytest.mark.parametrize("kind", ["imap", "smtp", "lmtp"])
def test_server_down_is_temporary(servers, kind):
    port = closed_port()
    text = directory_toml("down", kind, port, servers["RD_CA"])
    with Directory.from_toml(text, "down") as d:
        with pytest.raises(rd.Temporary) as info:
            if kind == "imap":
                d.auth(ALICE, ALICE_PASS)
            else:
                d.rcpt(ALICE)
        assert info.value.result == Result.TEMPORARY
        assert info.value.message
        assert re.search(str(port) + r"|refused|connect", info.value.message, re.I), info.value.message
        # still answered locally while the server is down
        assert d.is_local_domain("example.org") is True


def test_wrong_ca_is_not_ok(servers):
    # No ca-file: the test CA is not trusted, so STARTTLS must fail, never fall back to plain.
    text = directory_toml("noca", "imap", servers["RD_IMAP_PORT"])
    with Directory.from_toml(text, "noca") as d:
        with pytest.raises(rd.DirectoryError) as info:
            d.auth(ALICE, ALICE_PASS)
        assert info.value.result in (Result.TEMPORARY, Result.CONFIG), info.value
