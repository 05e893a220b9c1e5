#!/usr/bin/env bash
# The manual pages' test (scripts/test.sh runs it after the C programs are built):
#
#   man/check.sh
#
# 1. `make man` turns every man/*.scd into roff (scdoc); each page renders with man(1)
#    without a single warning and no line over 80 columns at MANWIDTH=80, and mandb's parser
#    (lexgrog) reads its NAME line.
#    The same check is first run on a deliberately broken page, which must produce warnings:
#    a check that cannot fail proves nothing.
# 2. `make install-man` puts each page under $(MANDIR)/manSECTION (a temporary DESTDIR).
# 3. The pages keep up with what they document: every key of the README's configuration tables
#    is in remote-directory.toml(5); every option the programs' --help lists (the C programs'
#    and remote-directoryd's), every PAM module option and every environment variable a C
#    program reads is in that program's page.
# Fails (never skips) when scdoc or man are missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

for tool in scdoc man lexgrog col; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "FAIL: $tool not found; install scdoc and man-db (scripts/install-deps.sh)" >&2; exit 1; }
done

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# What man prints on stderr while formatting PAGE: groff, tbl and man warnings, nothing else.
warnings() {
    LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -l "$1" 2>&1 >/dev/null
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# -- the check itself can fail --------------------------------------------------------------
cat >"$tmp/broken.1" <<'EOF'
.TH BROKEN 1
.SH NAME
broken \- a page with an undefined macro and an undefined string
.SH DESCRIPTION
.XX this macro does not exist
\*[nosuchstring]
EOF
if [ -z "$(warnings "$tmp/broken.1")" ]; then
    fail "the warning check printed nothing for a broken page: it would catch nothing"
fi

# -- build, render, parse --------------------------------------------------------------------
make --no-print-directory -s man
# From the sources, as the Makefile lists them: a stale file in man/build/ is not a page.
pages=()
for src in man/*.scd; do
    name=${src##*/}
    pages+=("man/build/${name%.scd}")
done
expected="checkpassword-remote-directory.8 directory-check.1 pam_remote_directory.8 policy-remote-directory.8 remote-directory.toml.5 remote-directoryd.8"
for name in $expected; do
    [ -f "man/build/$name" ] || fail "man/build/$name was not built (no man/$name.scd?)"
done
for page in "${pages[@]}"; do
    out=$(warnings "$page")
    if [ -n "$out" ]; then
        fail "$page renders with warnings:"; printf '%s\n' "$out" >&2
    fi
    # groff does not warn about a table or an example wider than the terminal: measure.
    width=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$page" 2>/dev/null | col -bx | wc -L)
    [ "$width" -le 80 ] || fail "$page has lines $width columns wide at MANWIDTH=80"
    lexgrog "$page" >/dev/null 2>&1 || fail "$page: lexgrog cannot parse its NAME section"
    echo "ok: $page"
done

# -- installed where man looks ---------------------------------------------------------------
make --no-print-directory -s install-man DESTDIR="$tmp/dest" PREFIX=/usr
for page in "${pages[@]}"; do
    name=${page##*/}
    [ -f "$tmp/dest/usr/share/man/man${name##*.}/$name" ] ||
        fail "make install-man did not install $name into share/man/man${name##*.}"
done

# -- the pages keep up with what they document ------------------------------------------------
# Is WORD written as a bold term (*WORD*, or *WORD=*...) in the scdoc source SRC?
documented() { grep -qF -- "*$2" "$1"; }

# Keys: first column of every README table whose header starts with "| key | default".
keys=$(awk '/^\| key \| default/ { t = 1; next } t && !/^\|/ { t = 0 } t' README.md |
    cut -d'|' -f2 | grep -o '`[^`]*`' | tr -d '`' | sort -u)
[ -n "$keys" ] || fail "found no configuration keys in README.md"
for key in $keys; do
    documented man/remote-directory.toml.5.scd "$key*" ||
        fail "README key '$key' is not in man/remote-directory.toml.5.scd"
done
# Options of the programs, as their --help lists them. `make programs` runs cargo build
# --release, which builds remote-directoryd too (a default member of the workspace).
make --no-print-directory -s programs >/dev/null
for bin in c-examples/build/directory-check c-examples/build/policy-remote-directory \
        "${CARGO_TARGET_DIR:-target}/release/remote-directoryd"; do
    prog=${bin##*/}
    opts=$("$bin" --help 2>&1 | grep -oE '(^|[ [,])--?[a-zA-Z][a-zA-Z-]*' | tr -d ' [,' | sort -u || true)
    [ -n "$opts" ] || fail "$bin --help lists no options"
    for opt in $opts; do
        documented "man/$prog".*.scd "$opt*" || fail "option $opt of $prog is not in its page"
    done
done
# PAM module options: the words its parser compares argv[i] with.
for opt in $(grep -oE 'str(n)?cmp\(argv\[i\], "[a-z_]+=?"' c-examples/pam_remote_directory.c |
    grep -oE '"[a-z_]+=?"' | tr -d '"'); do
    documented man/pam_remote_directory.8.scd "$opt" ||
        fail "PAM option $opt is not in man/pam_remote_directory.8.scd"
done
# Environment variables each program reads.
for src in c-examples/*.c; do
    prog=$(basename "$src" .c)
    page=$(ls man/"$prog".*.scd 2>/dev/null || true)
    [ -n "$page" ] || continue
    for var in $(grep -oE 'getenv\("[A-Z_]+"\)' "$src" | grep -oE '[A-Z_]{2,}' | sort -u); do
        documented "$page" "$var*" || fail "$prog reads \$$var, which $page does not mention"
    done
done

if [ "$failures" -gt 0 ]; then
    echo "man/check.sh: $failures failure(s)" >&2
    exit 1
fi
echo "man/check.sh: ${#pages[@]} pages render without warnings, install, and document every key and option"
