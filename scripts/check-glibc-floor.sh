#!/usr/bin/env bash
# Prove a build's glibc floor: no ELF file in it needs a GLIBC symbol version above MAX.
#
#   scripts/check-glibc-floor.sh PATH [MAX]      MAX defaults to 2.31 (Debian 11)
#
# PATH is a onedir tree (every ELF file under it is checked) or one file. A
# PyInstaller onefile is checked as itself (the bootloader) and, when a Python
# with PyInstaller is at hand ($PYTHON, build/venv, .venv or python3), its
# embedded archive is unpacked to a temporary directory and checked too.
#
# For each ELF file it prints the highest GLIBC_x.y the file references
# (`objdump -T`: the versioned dynamic symbols it imports), marks the ones
# above MAX, and exits 1 if there is any (2 on a usage error). A file that
# references GLIBC_PRIVATE is a failure as well: those symbols are not stable
# across glibc releases.
set -euo pipefail

usage() { # usage STATUS
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "$1"
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage 2; fi
case "$1" in -h | --help) usage 0 ;; esac
TARGET=$1
MAX=${2:-2.31}
[[ "$MAX" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || { echo "check-glibc-floor: MAX must look like 2.31, not '$MAX'" >&2; exit 2; }
[ -e "$TARGET" ] || { echo "check-glibc-floor: no such file or directory: $TARGET" >&2; exit 2; }
command -v objdump >/dev/null || { echo "check-glibc-floor: objdump not found (apt-get install binutils)" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT

is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }

# version_gt A B: A > B in version order
version_gt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n1)" = "$1" ]; }

# unpack_onefile EXE DIR: unpack a PyInstaller onefile's embedded archive into DIR;
# fails when EXE is not one or no Python with PyInstaller is available to read it.
unpack_onefile() {
    local exe=$1 dir=$2 py
    for py in "${PYTHON:-}" "$REPO/build/venv/bin/python" "$REPO/.venv/bin/python" python3; do
        if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then continue; fi
        "$py" -c 'import PyInstaller.archive.readers' 2>/dev/null || continue
        "$py" - "$exe" "$dir" <<'EOF'
import os, sys
from PyInstaller.archive.readers import CArchiveReader

try:
    archive = CArchiveReader(sys.argv[1])
except Exception:  # not a PyInstaller executable
    sys.exit(3)
for name in archive.toc:
    data = archive.extract(name)
    if not data:  # directory entries
        continue
    dest = os.path.join(sys.argv[2], name.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as f:
        f.write(data)
EOF
        return
    done
    echo "check-glibc-floor: note: no Python with PyInstaller found; a onefile's embedded libraries are not checked" >&2
    return 1
}

FILES=()
LABELS=()
if [ -d "$TARGET" ]; then
    while IFS= read -r -d '' f; do
        if is_elf "$f"; then FILES+=("$f"); LABELS+=("${f#"$TARGET"/}"); fi
    done < <(find "$TARGET" -type f -print0 | sort -z)
else
    is_elf "$TARGET" || { echo "check-glibc-floor: $TARGET is not an ELF file" >&2; exit 2; }
    FILES+=("$TARGET")
    LABELS+=("$(basename "$TARGET")")
    TMP=$(mktemp -d)
    if unpack_onefile "$TARGET" "$TMP" 2>/dev/null; then
        while IFS= read -r -d '' f; do
            if is_elf "$f"; then FILES+=("$f"); LABELS+=("$(basename "$TARGET")!/${f#"$TMP"/}"); fi
        done < <(find "$TMP" -type f -print0 | sort -z)
    fi
fi
[ ${#FILES[@]} -gt 0 ] || { echo "check-glibc-floor: no ELF files in $TARGET" >&2; exit 2; }

echo "glibc floor check: $TARGET (max GLIBC_$MAX)"
over=()
highest_all=0
for i in "${!FILES[@]}"; do
    f=${FILES[$i]}
    dyn=$(objdump -T "$f" 2>/dev/null || true)
    versions=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$dyn" | sed 's/^GLIBC_//' | sort -uV || true)
    private=$(grep -c 'GLIBC_PRIVATE' <<<"$dyn" || true)
    highest=$(tail -n1 <<<"$versions")
    mark=ok
    if [ -z "$highest" ]; then
        highest=-
    elif version_gt "$highest" "$MAX"; then
        above=$(while read -r v; do if version_gt "$v" "$MAX"; then printf ' GLIBC_%s' "$v"; fi; done <<<"$versions")
        mark="NEEDS >$MAX:$above"
        over+=("${LABELS[$i]}")
    fi
    if [ "$private" -gt 0 ]; then
        mark="$mark; GLIBC_PRIVATE"
        over+=("${LABELS[$i]} (GLIBC_PRIVATE)")
    fi
    if [ "$highest" != - ] && version_gt "$highest" "$highest_all"; then highest_all=$highest; fi
    printf '  %-10s %-60s %s\n' "$highest" "${LABELS[$i]}" "$mark"
done

echo "checked ${#FILES[@]} ELF files; highest GLIBC version referenced: $highest_all"
if [ ${#over[@]} -gt 0 ]; then
    echo "FAIL: ${#over[@]} file(s) need more than GLIBC_$MAX: ${over[*]}"
    exit 1
fi
echo "PASS: every ELF file runs on glibc $MAX or later"
