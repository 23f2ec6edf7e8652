#!/usr/bin/env bash
# Install the frozen egress-router (the onedir tree from `pyinstaller build.spec`)
# the way CNI plugins are installed: the tree under PREFIX, and
# CNI_BIN_DIR/egress-router as a symlink to PREFIX/egress-router.
#
#   scripts/install.sh [--prefix /opt/egress-router] [--cni-bin-dir /opt/cni/bin]
#                      [--from dist/egress-router] [--force] [--uninstall]
#
# Layout (each tree is named after a hash of its content):
#   PREFIX/app-<hash>/{egress-router,_internal/}   the onedir tree
#   PREFIX/egress-router -> app-<hash>/egress-router
#   PREFIX/.install-manifest                      what --uninstall removes
#   CNI_BIN_DIR/egress-router -> PREFIX/egress-router
#
# Re-running with the same tree changes nothing. A new tree is copied next to
# the old one and switched in by renaming a symlink, so a runtime exec'ing the
# plugin during an upgrade gets either the old or the new one, never a partial
# copy. The previous tree is kept (a process started a moment before the
# switch may still re-exec it); older ones are removed.
set -euo pipefail

PROG=install.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/egress-router
CNI_BIN_DIR=
FROM="$REPO/dist/egress-router"
UNINSTALL=0
FORCE=0
MANIFEST_NAME=.install-manifest
EXE_NAME=egress-router

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --cni-bin-dir) CNI_BIN_DIR=${2:?--cni-bin-dir needs a directory}; shift 2 ;;
        --cni-bin-dir=*) CNI_BIN_DIR=${1#*=}; shift ;;
        --from) FROM=${2:?--from needs a directory}; shift 2 ;;
        --from=*) FROM=${1#*=}; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --force) FORCE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# Absolute, normalised paths: the CNI symlink must not depend on the cwd.
abspath() {
    case "$1" in
        /*) realpath -m -- "$1" ;;
        *) realpath -m -- "$PWD/$1" ;;
    esac
}

PREFIX=$(abspath "$PREFIX")
case "$PREFIX" in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /opt/cni | /opt/cni/bin | /proc | /root \
        | /run | /sbin | /srv | /sys | /tmp | /usr | /usr/bin | /usr/lib | /usr/local | /usr/local/bin \
        | /usr/local/lib | /usr/sbin | /var | /var/lib)
        die "refusing --prefix $PREFIX: use a directory of its own, e.g. /opt/egress-router" ;;
esac
MANIFEST="$PREFIX/$MANIFEST_NAME"

manifest_get() {
    # manifest_get KEY -> value ('' when absent)
    [ -f "$MANIFEST" ] || return 0
    sed -n "s/^$1=//p" "$MANIFEST" | tail -n 1
}

if [ -z "$CNI_BIN_DIR" ]; then
    CNI_BIN_DIR=$(manifest_get cni_link)
    CNI_BIN_DIR=${CNI_BIN_DIR:+$(dirname "$CNI_BIN_DIR")}
    CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
fi
CNI_BIN_DIR=$(abspath "$CNI_BIN_DIR")
CNI_LINK="$CNI_BIN_DIR/$EXE_NAME"
PREFIX_LINK="$PREFIX/$EXE_NAME"

# Replace (or create) symlink $2 pointing at $1 with one rename(2).
atomic_symlink() {
    local target=$1 link=$2 tmp
    tmp="$(dirname "$link")/.$(basename "$link").tmp.$$"
    rm -f -- "$tmp"
    ln -s -- "$target" "$tmp"
    mv -T -f -- "$tmp" "$link"
}

prefix_is_ours_or_new() {
    [ ! -e "$PREFIX" ] && return 0
    [ -d "$PREFIX" ] || return 1
    [ -f "$MANIFEST" ] && return 0
    [ -z "$(ls -A -- "$PREFIX")" ]
}

uninstall() {
    if [ ! -f "$MANIFEST" ]; then
        if [ ! -e "$PREFIX" ]; then
            echo "$PROG: nothing installed in $PREFIX"
            return 0
        fi
        die "$PREFIX has no $MANIFEST_NAME: not installed by this script, leaving it alone"
    fi
    local link removed=()
    link=$(manifest_get cni_link)
    link=${link:-$CNI_LINK}
    # Only our own symlink: a file or a link elsewhere means someone replaced it since.
    if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$PREFIX_LINK" ]; then
        rm -f -- "$link"
        removed+=("$link")
    elif [ -e "$link" ] || [ -L "$link" ]; then
        echo "$PROG: leaving $link: it no longer points to $PREFIX_LINK" >&2
    fi
    if [ -L "$PREFIX_LINK" ]; then
        rm -f -- "$PREFIX_LINK"
        removed+=("$PREFIX_LINK")
    fi
    local d
    for d in "$PREFIX"/app-* "$PREFIX"/.app-*.tmp.*; do
        [ -d "$d" ] || continue
        rm -rf -- "$d"
        removed+=("$d")
    done
    local bin_dir_created
    bin_dir_created=$(manifest_get cni_bin_dir_created)
    rm -f -- "$MANIFEST"
    removed+=("$MANIFEST")
    if rmdir -- "$PREFIX" 2>/dev/null; then removed+=("$PREFIX"); fi
    local bin_dir
    bin_dir=$(dirname -- "$link")
    if [ "$bin_dir_created" = 1 ] && rmdir -- "$bin_dir" 2>/dev/null; then
        removed+=("$bin_dir")
    fi
    echo "$PROG: removed:"
    printf '  %s\n' "${removed[@]}"
}

install() {
    [ -x "$FROM/$EXE_NAME" ] && [ -d "$FROM/_internal" ] \
        || die "$FROM is not a onedir build (expected $EXE_NAME and _internal/): run scripts/build.sh, or pass --from"
    prefix_is_ours_or_new || die "$PREFIX exists, is not empty and has no $MANIFEST_NAME: refusing to install over it"

    # A CNI_BIN_DIR/egress-router that is not our link (the Go plugin, a copied
    # binary) is replaced only with --force.
    if [ -e "$CNI_LINK" ] || [ -L "$CNI_LINK" ]; then
        if ! { [ -L "$CNI_LINK" ] && [ "$(readlink -- "$CNI_LINK")" = "$PREFIX_LINK" ]; }; then
            [ "$FORCE" = 1 ] || die "$CNI_LINK exists and is not a link to $PREFIX_LINK: pass --force to replace it"
            [ -d "$CNI_LINK" ] && [ ! -L "$CNI_LINK" ] && die "$CNI_LINK is a directory: remove it first"
            echo "$PROG: replacing $CNI_LINK ($(ls -ld -- "$CNI_LINK" | cut -c1-10))"
        fi
    fi

    local hash app
    # Named after the content: the same build installs to the same place.
    hash=$(tar -C "$FROM" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . \
        | sha256sum | cut -c1-12)
    app="app-$hash"
    # Remember whether the bin dir is ours to remove again (kept across re-installs).
    local bin_dir_created
    bin_dir_created=$(manifest_get cni_bin_dir_created)
    [ -d "$CNI_BIN_DIR" ] || bin_dir_created=1
    mkdir -p -- "$PREFIX" "$CNI_BIN_DIR"

    local changed=0
    if [ ! -d "$PREFIX/$app" ]; then
        STAGING="$PREFIX/.$app.tmp.$$"
        rm -rf -- "$STAGING"
        trap 'rm -rf -- "$STAGING"' EXIT
        cp -a -- "$FROM" "$STAGING"
        chmod -R u+rwX,go+rX,go-w -- "$STAGING"
        mv -T -- "$STAGING" "$PREFIX/$app"
        trap - EXIT
        changed=1
    fi

    local previous=
    if [ -L "$PREFIX_LINK" ]; then
        previous=$(readlink -- "$PREFIX_LINK")
        previous=${previous%%/*}
    fi
    if [ "$previous" != "$app" ]; then
        atomic_symlink "$app/$EXE_NAME" "$PREFIX_LINK"
        changed=1
    fi
    if ! { [ -L "$CNI_LINK" ] && [ "$(readlink -- "$CNI_LINK")" = "$PREFIX_LINK" ]; }; then
        atomic_symlink "$PREFIX_LINK" "$CNI_LINK"
        changed=1
    fi

    # Keep the current and the previous tree.
    local d
    for d in "$PREFIX"/app-*; do
        [ -d "$d" ] || continue
        case "$(basename "$d")" in "$app" | "$previous") continue ;; esac
        rm -rf -- "$d"
    done

    {
        echo "# written by scripts/install.sh; read by --uninstall"
        echo "app=$app"
        echo "cni_link=$CNI_LINK"
        echo "cni_bin_dir_created=${bin_dir_created:-0}"
    } >"$MANIFEST.tmp.$$"
    mv -f -- "$MANIFEST.tmp.$$" "$MANIFEST"

    if [ "$changed" = 1 ]; then
        echo "$PROG: installed $PREFIX/$app ($(du -sh -- "$PREFIX/$app" | cut -f1)); $CNI_LINK -> $PREFIX_LINK"
    else
        echo "$PROG: already installed: $PREFIX/$app; $CNI_LINK -> $PREFIX_LINK"
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
else
    install
fi
