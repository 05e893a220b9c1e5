#!/usr/bin/env bash
# Install the Python package as a user would (`pip install ./python`: pip builds the Rust
# library and packages it) into a fresh venv, then run its tests against the real servers
# with no REMOTE_DIRECTORY_LIB, so they use the library inside the installed wheel; mypy
# --strict checks the installed package's type hints (py.typed).
#
#   tests/servers/servers.sh start /tmp/rd-py && export RD_SERVERS_ENV=/tmp/rd-py/env
#   python/tests/run.sh [pytest args...]
#
# Environment:
#   RD_SERVERS_ENV  required; the env file written by tests/servers/servers.sh
#   RD_PY_VENV      venv directory to (re)use (default: a temporary one, removed at exit)
#   PYTHON          interpreter for the venv (default: python3)
# The build compiles the crate into the repository's target/ (or $CARGO_TARGET_DIR), so after
# `cargo build --release` only the crate itself is compiled again, not its dependencies.
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
if ! command -v cargo >/dev/null 2>&1; then
    echo "FAIL: cargo not found: pip builds the Rust library with it (see scripts/install-deps.sh)" >&2
    exit 2
fi
# The point of these tests is the library inside the package: an inherited variable would win.
unset REMOTE_DIRECTORY_LIB

if [ -n "${RD_PY_VENV:-}" ]; then
    venv=$RD_PY_VENV
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    venv=$tmp/venv
fi

"${PYTHON:-python3}" -m venv "$venv"
cd "$root"
start=$(date +%s)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python pytest mypy==2.4.1
echo "pip install ./python pytest mypy: $(($(date +%s) - start)) s"

# Run from outside the source tree so the installed package (not python/) is imported.
cd "$venv"
# The installed package's type hints, as a user's type checker sees them through py.typed.
"$venv/bin/python" -m mypy --strict --no-incremental -p remote_directory
# tmp_path directories inside the venv: removed with it, nothing left in /tmp.
"$venv/bin/python" -m pytest -v -rA -p no:cacheprovider --basetemp="$venv/pytest-tmp" "$root/python/tests" "$@"
