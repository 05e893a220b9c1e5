#!/usr/bin/env bash
# Install the Python binding into a fresh venv and run its tests against the real servers.
#
#   tests/servers/servers.sh start /tmp/rd-py && export RD_SERVERS_ENV=/tmp/rd-py/env
#   cargo build --release
#   python/tests/run.sh [pytest args...]
#
# Environment:
#   RD_SERVERS_ENV        required; the env file written by tests/servers/servers.sh
#   REMOTE_DIRECTORY_LIB  the library to test (default: target/release/libremote_directory.so)
#   RD_PY_VENV            venv directory to (re)use (default: a temporary one, removed at exit)
#   PYTHON                interpreter for the venv (default: python3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${RD_SERVERS_ENV:-}" ]; then
    echo "FAIL: RD_SERVERS_ENV is unset. Start the test servers first:" >&2
    echo "  tests/servers/servers.sh start /tmp/rd-py && export RD_SERVERS_ENV=/tmp/rd-py/env" >&2
    exit 2
fi
if [ ! -f "$RD_SERVERS_ENV" ]; then
    echo "FAIL: RD_SERVERS_ENV=$RD_SERVERS_ENV is not a file; start the servers with tests/servers/servers.sh" >&2
    exit 2
fi

lib=${REMOTE_DIRECTORY_LIB:-$root/target/release/libremote_directory.so}
if [ ! -f "$lib" ]; then
    echo "FAIL: $lib not found; run 'cargo build --release' first (or set REMOTE_DIRECTORY_LIB)" >&2
    exit 2
fi
export REMOTE_DIRECTORY_LIB=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")

if [ -n "${RD_PY_VENV:-}" ]; then
    venv=$RD_PY_VENV
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    venv=$tmp/venv
fi

"${PYTHON:-python3}" -m venv "$venv"
cd "$root"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python pytest

# Run from outside the source tree so the installed package (not python/) is imported.
cd "$venv"
"$venv/bin/python" -m pytest -v -rA -p no:cacheprovider "$root/python/tests" "$@"
