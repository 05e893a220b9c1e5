#!/usr/bin/env bash
# Install the Debian packages that remote-directory's build and tests need.
#
#   scripts/install-deps.sh          install whatever is missing (needs root or passwordless sudo)
#   scripts/install-deps.sh --check  only report; exit 1 when something is missing
#
# Idempotent and fast when everything is present: it only asks dpkg (no `apt-get update`,
# no network) unless a package is actually missing.  It never starts a system-wide Dovecot
# or Postfix: the tests run throwaway instances of their own (tests/servers/servers.sh).
set -euo pipefail

# Why each package is here:
#   build-essential pkg-config libssl-dev  C compiler/linker for the C examples and the
#                                          optional native-tls (OpenSSL) feature
#   openssl                                test CA and server certificate at run time
#   dovecot-* postfix                      the real IMAP/LMTP/submission/SMTP test servers
#   libpam0g-dev libpam-wrapper pamtester  building and testing the PAM integration
#   iproute2                               `ss`, to see whether a test port is taken
#   valgrind                               memory checks of the C API
#   python3 python3-venv python3-pip       the Python bindings' tests and the server self-test
#   sasl2-bin libsasl2-modules             testsaslauthd, and Cyrus SASL's PLAIN/LOGIN for Postfix
#                                          smtpd_sasl_type = cyrus asking the daemon's saslauthd socket
#   nginx-light libnginx-mod-mail          nginx's mail proxy asking the daemon's auth_http endpoint
#   dovecot-auth-lua                       Dovecot's Lua passdb running contrib/dovecot-passdb.lua
#   scdoc man-db bsdextrautils             manual pages: scdoc builds them (`make`), man/lexgrog/col
#                                          check that they render (man/check.sh)
#   redis-server                           the shared store of the `redis` feature's tests
#   systemd                                systemd-analyze verify and systemd-sysusers --dry-run
#                                          check the installed unit and sysusers.d file (offline)
PACKAGES=(
    build-essential pkg-config libssl-dev openssl
    dovecot-core dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix
    libpam0g-dev libpam-wrapper pamtester
    iproute2 valgrind
    python3 python3-venv python3-pip
    scdoc man-db bsdextrautils
    sasl2-bin libsasl2-modules nginx-light libnginx-mod-mail dovecot-auth-lua
    redis-server systemd
)

check_only=false
case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: this script supports Debian/Ubuntu (dpkg/apt) only." >&2
    echo "install-deps: needed: ${PACKAGES[*]}" >&2
    exit 1
fi

# A package counts as present only when dpkg says "installed" (not merely known or
# half-configured, which `dpkg-query -W` alone would accept).
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

install_line="apt-get install -y --no-install-recommends ${missing[*]:-}"

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#PACKAGES[@]} Debian packages are installed."
elif $check_only; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: install them with: $install_line" >&2
    exit 1
else
    # Root, or sudo without a password prompt (we must never hang waiting for one: CI has
    # no terminal).  Otherwise tell the user the exact command and stop.
    if ((EUID == 0)); then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install-deps: missing packages: ${missing[*]}" >&2
        echo "install-deps: not root and no passwordless sudo; as root run:" >&2
        echo "    apt-get update && DEBIAN_FRONTEND=noninteractive $install_line" >&2
        exit 1
    fi

    echo "install-deps: installing: ${missing[*]}"

    # Keep the packages' maintainer scripts from starting Dovecot/Postfix system-wide
    # (they would grab ports 25/143/993 and keep running).  invoke-rc.d honours
    # policy-rc.d exit code 101 = "action forbidden".  Only remove it if we created it:
    # an existing one (containers often ship one) belongs to someone else.
    POLICY=/usr/sbin/policy-rc.d
    created_policy=false
    cleanup() {
        if $created_policy; then
            "${SUDO[@]}" rm -f "$POLICY"
        fi
    }
    trap cleanup EXIT
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\n# temporary, from remote-directory scripts/install-deps.sh\nexit 101\n' |
            "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY"
        created_policy=true
    fi

    # Postfix's postinst asks what kind of mail system this is; "No configuration" leaves
    # /etc/postfix/main.cf alone (our tests use their own instance and config directory).
    if command -v debconf-set-selections >/dev/null 2>&1; then
        echo "postfix postfix/main_mailer_type select No configuration" |
            "${SUDO[@]}" debconf-set-selections
    fi

    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"

    # Verify, so a partial failure is not reported as success.
    still=()
    for pkg in "${missing[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "installed" ]] || still+=("$pkg")
    done
    if ((${#still[@]} > 0)); then
        echo "install-deps: still missing after apt-get: ${still[*]}" >&2
        exit 1
    fi
    echo "install-deps: installed: ${missing[*]}"
fi

# Rust is not a Debian package here: Debian 12's rustc is older than the crate's
# rust-version, so it comes from rustup.  ~/.cargo/bin is where rustup puts it; a
# non-login shell (CI) may not have it on PATH yet.
if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        echo "install-deps: cargo is at ${CARGO_HOME:-$HOME/.cargo}/bin/cargo but not on PATH;" >&2
        echo "install-deps: run: export PATH=\"${CARGO_HOME:-$HOME/.cargo}/bin:\$PATH\"" >&2
    else
        echo "install-deps: cargo not found. Install Rust (stable, >= the rust-version in" >&2
        echo "install-deps: Cargo.toml) with rustup, see https://rustup.rs :" >&2
        echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal" >&2
        echo "    . \"\$HOME/.cargo/env\"" >&2
    fi
    exit 1
fi
echo "install-deps: $(cargo --version)"
