"""auth(..., client_ip=...): address checks and the per-address throttle, against
the real Dovecot of tests/servers/servers.sh ($RD_SERVERS_ENV)."""

import ipaddress

import pytest

import remote_directory as rd
from remote_directory import Directory, Result

from conftest import ALICE, ALICE_PASS, directory_toml


@pytest.mark.parametrize("bad", ["localhost", "203.0.113.5:993", "[2001:db8::1]", "", "1.2.3.4\r\n"])
def test_client_ip_that_is_not_an_address_is_invalid_input(open_dir, bad):
    d = open_dir("imap")
    with pytest.raises(rd.InvalidInput) as info:
        d.auth(ALICE, ALICE_PASS, client_ip=bad)
    assert info.value.result == Result.INVALID_INPUT
    assert "client_ip" in info.value.message


@pytest.mark.parametrize("ip", [None, "203.0.113.5", b"2001:db8::1", ipaddress.ip_address("198.51.100.9")])
def test_client_ip_forms_are_accepted(open_dir, ip):
    assert open_dir("imap").auth(ALICE, ALICE_PASS, client_ip=ip) is True


def test_client_budget_throttles_one_address_only(servers):
    toml = directory_toml("imap", "imap", servers["RD_IMAP_PORT"], servers["RD_CA"],
                          extra='throttle.client = "2/10m"')
    with Directory.from_toml(toml, "imap") as d:
        for guess in ("wrong-1", "wrong-2"):
            assert d.auth(ALICE, guess, client_ip="203.0.113.66") is False
        with pytest.raises(rd.Temporary) as info:
            d.auth(ALICE, ALICE_PASS, client_ip="203.0.113.66")
        assert info.value.message.startswith("throttled: client 203.0.113.66 reached 2 refused logins")
        assert "wrong-" not in info.value.message and ALICE_PASS not in info.value.message
        assert d.auth(ALICE, ALICE_PASS, client_ip="203.0.113.67") is True

