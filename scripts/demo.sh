#!/usr/bin/env bash
# The README's first command: build everything and show it working.
#
#   ./scripts/demo.sh
#
# Installs the build and server packages (scripts/install-deps.sh), builds the library and
# the C programs, starts a throwaway Dovecot (and Postfix) on loopback, runs the example
# program against it (a right and a wrong password over IMAP with STARTTLS, an existing and
# an unknown recipient over LMTP, a local and a foreign domain), then stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
make
servers=$(mktemp -d /tmp/remote-directory-demo.XXXXXX)
trap 'tests/servers/servers.sh stop "$servers" >/dev/null 2>&1 || true' EXIT
echo "starting a throwaway Dovecot and Postfix under $servers ..."
tests/servers/servers.sh start "$servers" >/dev/null </dev/null
# shellcheck disable=SC1091
. "$servers/env"

config="$servers/remote-directory.toml"
cat >"$config" <<TOML
# Two directories on the throwaway Dovecot: IMAP for passwords, LMTP for recipients.
[directory.imap]
type = "imap"
address = "localhost"
port = $RD_IMAP_PORT
timeout = "10s"
tls.ca-file = "$RD_CA"
lookup.domains = ["example.org"]

[directory.lmtp]
type = "lmtp"
address = "localhost"
port = $RD_LMTP_PORT
tls.ca-file = "$RD_CA"
lookup.domains = ["example.org"]
TOML
echo "configuration: $config"
echo
c-examples/build/example "$config" imap \
    auth alice@example.org alice-pass-1 OK \
    auth alice@example.org wrong-password REJECTED \
    domain example.org OK \
    domain example.net REJECTED \
    use lmtp \
    rcpt alice@example.org OK \
    rcpt nosuchuser@example.org REJECTED
echo
echo "the administrator's tool, directory-check (exit status 0 OK, 1 REJECTED, 2 TEMPORARY, ...):"
check() {
    echo "\$ directory-check $*"
    c-examples/build/directory-check -c "$config" "$@" && status=0 || status=$?
    echo "  (exit status $status)"
}
printf 'alice-pass-1\n' | check -d imap -v auth alice@example.org
printf 'not-her-password\n' | check -d imap -v auth alice@example.org
check -d lmtp -v rcpt alice@example.org nosuchuser@example.org
check -d lmtp domain example.org example.net
echo
echo "(the password is read from the terminal without echo, or from stdin as above;"
echo " this script stops the servers when it ends)"
