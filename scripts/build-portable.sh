#!/usr/bin/env bash
# Build the portable egress-router (glibc >= 2.31: RHEL 9 / RHCOS 9, Ubuntu 20.04+,
# Debian 11+) inside a Debian 11 (bullseye) root filesystem, check its glibc floor,
# and prove it runs there.
#
#   scripts/build-portable.sh [--no-smoke] [--no-tests] [--e2e] [--head] [--new-rootfs]
#
#   --no-smoke     skip the ADD/CHECK/DEL smoke test of the frozen executables
#   --no-tests     skip the unit tests under bullseye's Python 3.9
#   --e2e          also run the end-to-end suite (tests/netns) in the root filesystem, under
#                  Python 3.9 and against the frozen onedir (namespaces of its own; ~2 min)
#   --head         build `git archive HEAD` instead of the working tree
#   --new-rootfs   throw the root filesystem away and debootstrap a new one
#
# Needs root, debootstrap (installed with apt-get when missing), unshare/nsenter
# (util-linux) and ip (iproute2). Produces:
#   dist/portable/egress-router/egress-router   onedir tree (install with
#                                               scripts/install.sh --from dist/portable/egress-router)
#   dist/portable/onefile/egress-router         onefile
#   dist/portable/build-info.txt                Python, packages, floor check output
#
# How it works (see docs/portable.md):
#  - build/portable/rootfs: `debootstrap bullseye` from the Debian mirror this machine's
#    apt uses (DEBIAN_MIRROR overrides it), plus bullseye-updates/-security; reused
#    by later runs. build/portable/logs/ holds every step's full output.
#  - Every command in the root filesystem runs in its own private mount namespace
#    (unshare --mount) with its own /proc, /sys (read-only) and a private /dev
#    (tmpfs with null, zero, full, random, urandom, tty); the host's /dev is not
#    exposed. Those mounts exist only inside that namespace, so they vanish when
#    the command ends, whatever happens; the EXIT trap still checks that nothing is
#    left mounted under the root filesystem. Only pip and apt get the host's
#    network; the tests, the build and the checks run in a fresh, empty network
#    namespace, and the smoke test in namespaces this script creates.
#  - The source is a copy of the working tree as git sees it (tracked files plus
#    untracked ones that are not ignored; uncommitted edits included), or of HEAD
#    with --head, in /src/egress-router inside the root filesystem.
#  - The venv (/opt/venv) is reused while the pins below and pyproject.toml are unchanged.
#
# Exit status: 0 built and checked; 1 a step failed; 75 the Debian mirror is unreachable.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=build-portable.sh
SUITE=bullseye
GLIBC_MAX=2.31
WORKDIR=$(realpath -m "${ERP_PORTABLE_DIR:-$REPO/build/portable}")
ROOTFS=$WORKDIR/rootfs
LOGDIR=$WORKDIR/logs
OUT=$REPO/dist/portable
SRC_IN=/src/egress-router # in the root filesystem
VENV_IN=/opt/venv
EXIT_MIRROR_UNREACHABLE=75

# What bullseye provides: Python 3.9 with headers (PyInstaller bundles the shared
# libpython), a compiler for python-iptables' helper, strip/objdump, and the
# libraries build.spec bundles (libnftables1 and its deps, libxtables12); nftables,
# iptables, iproute2 and strace for the tests.
PACKAGES=(python3 python3-venv python3-dev gcc libc6-dev binutils ca-certificates
    libnftables1 nftables iptables iproute2 strace)

# The newest releases that still support Python 3.9 (pip's resolver checks
# Requires-Python too; the upper bounds keep the build reproducible).
PIP_PINS=(
    "pyinstaller>=6.22,<6.23"
    "pyroute2==0.9.7"
    "click>=8.1,<8.2"        # click 8.2 needs Python 3.10
    "structlog>=23.1,<26"    # structlog 26 needs Python 3.10
    "pytest>=8,<9"           # pytest 9 needs Python 3.10
    "hypothesis>=6.80,<6.142" # 6.141 is the last release for Python 3.9
    "python-iptables>=1.0,<2"
    "PyYAML>=6,<7"
    "kubernetes-validate>=1.28"
)

SMOKE=1
TESTS=1
E2E=0
SOURCE=worktree
NEW_ROOTFS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --no-smoke) SMOKE=0 ;;
        --no-tests) TESTS=0 ;;
        --e2e) E2E=1 ;;
        --head) SOURCE="head" ;;
        --new-rootfs) NEW_ROOTFS=1 ;;
        -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$PROG: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "$PROG: $*" >&2; }
die() {
    log "$*"
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, network namespaces)"
[ "$(uname -s)" = Linux ] || die "Linux only"
ARCH=$(dpkg --print-architecture 2>/dev/null || true)
case "$(uname -m)" in
    x86_64) ARCH=${ARCH:-amd64} ;;
    aarch64) ARCH=${ARCH:-arm64} ;;
    *) ARCH=${ARCH:-$(uname -m)} ;;
esac
for tool in unshare nsenter chroot mount findmnt ip objdump git flock; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install util-linux mount iproute2 binutils git)"
done

now_ms() { date +%s%3N; }
T_START=$(now_ms)
TIMINGS=()
CURRENT_STEP=
CURRENT_LOG=
NETNS=()

# --- cleanup: namespaces this script created, and a check that nothing is mounted ----------
mounts_under() { # mount points at or below $1 in this (the host's) mount namespace
    findmnt -rn -o TARGET | awk -v root="$1" '$0 == root || index($0, root "/") == 1' | sort -r
}

cleanup() {
    local rc=$? ns m
    set +e
    for ns in "${NETNS[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    # Nothing is ever mounted under the root filesystem in this namespace (see
    # in_root); should something be there anyway, unmount it rather than leave it.
    while read -r m; do
        [ -n "$m" ] || continue
        log "unmounting leftover $m"
        umount -l "$m"
    done < <(mounts_under "$ROOTFS")
    if [ "$rc" != 0 ] && [ -n "$CURRENT_STEP" ]; then
        log "FAILED at step '$CURRENT_STEP' (exit $rc); last lines of $CURRENT_LOG:"
        tail -n 40 "$CURRENT_LOG" 2>/dev/null | sed 's/^/    /' >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME FUNCTION [ARGS...]: run quietly (output in logs/NAME.log), timed.
# Not called from an `if`, so `set -e` stays in force inside FUNCTION.
step() {
    local name=$1 t0
    shift
    CURRENT_STEP=$name
    CURRENT_LOG=$LOGDIR/$name.log
    t0=$(now_ms)
    printf '%s: %-14s ... ' "$PROG" "$name" >&2
    "$@" >"$CURRENT_LOG" 2>&1
    local ms=$(($(now_ms) - t0))
    printf '%d.%ds\n' $((ms / 1000)) $((ms % 1000 / 100)) >&2
    TIMINGS+=("$(printf '%-14s %6d.%ds' "$name" $((ms / 1000)) $((ms % 1000 / 100)))")
    CURRENT_STEP=
}

# --- running things inside the root filesystem -------------------------------------------------
# in_root [--net none|host|NETNS] [--netns-dir] [--] CMD...
#   none         a fresh, empty network namespace (the default: tests, build, checks)
#   host         the host's network (pip and apt only)
#   NETNS        a namespace this script created, e.g. /run/netns/erp-ID-node (smoke test)
#   --netns-dir  the host's /run/netns, read-only, at /run/netns (CNI_NETNS paths resolve)
# CMD runs in the root filesystem with a clean environment (put variables in front of
# it with env), in a private mount namespace that holds all the mounts it needs.
# shellcheck disable=SC2016  # the inner script is single-quoted on purpose
IN_ROOT_SCRIPT='
set -eu
r=$1 netns_dir=$2 own_net=$3
shift 3
# The root filesystem becomes a mount point of its own (ip netns and ip -n remount "/").
mount --bind "$r" "$r"
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t tmpfs -o nosuid,mode=0755,size=8m erp-dev "$r/dev"
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    name=${spec%%:*} nums=${spec#*:}
    mknod -m 0666 "$r/dev/$name" c "${nums%:*}" "${nums#*:}"
done
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mkdir "$r/dev/shm" "$r/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 erp-shm "$r/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755 erp-run "$r/run"
if [ "$netns_dir" = 1 ]; then
    mkdir "$r/run/netns"
    mount --rbind /run/netns "$r/run/netns"
    mount -o remount,bind,ro "$r/run/netns"
fi
if [ "$own_net" = 1 ]; then ip link set lo up; fi
exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
'
in_root() {
    local net=none netns_dir=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --net) net=$2; shift 2 ;;
            --netns-dir) netns_dir=1; shift ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    local enter=() ns=(--mount --propagation private) own_net=0
    case "$net" in
        none) ns+=(--net); own_net=1 ;;
        host)
            # Name resolution as on the host (pip and apt reach the same registries).
            cp -f /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
            cp -f /etc/hosts "$ROOTFS/etc/hosts" 2>/dev/null || true
            ;;
        /run/netns/erp-*) enter=(nsenter --net="$net" --) ;;
        *) die "in_root: bad --net $net" ;;
    esac
    "${enter[@]}" unshare "${ns[@]}" -- bash -c "$IN_ROOT_SCRIPT" in_root "$ROOTFS" "$netns_dir" "$own_net" "$@"
}

# --- the Debian mirror -------------------------------------------------------------------------
url_ok() { # url_ok URL: the URL answers 200
    if command -v curl >/dev/null; then
        curl -fsS -m 20 -o /dev/null "$1" 2>/dev/null
    elif command -v wget >/dev/null; then
        wget -q -T 20 -O /dev/null "$1" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)' "$1" 2>/dev/null
    fi
}

host_mirror() { # the first plain Debian archive URL in this machine's apt sources
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    grep -hoE '(https?://[^ ]+/debian)/?( |$)' "${files[@]}" 2>/dev/null | awk '{ sub(/\/$/, "", $1); print $1; exit }'
}

pick_mirror() {
    local candidates=() m
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        candidates=("$DEBIAN_MIRROR")
    else
        m=$(host_mirror)
        [ -n "$m" ] && candidates+=("$m")
        candidates+=(http://deb.debian.org/debian http://archive.debian.org/debian)
    fi
    for m in "${candidates[@]}"; do
        if url_ok "$m/dists/$SUITE/Release"; then
            MIRROR=$m
            return 0
        fi
    done
    log "no Debian mirror serves $SUITE (tried: ${candidates[*]}); set DEBIAN_MIRROR"
    exit "$EXIT_MIRROR_UNREACHABLE"
}

# --- steps -------------------------------------------------------------------------------------
ROOTFS_STAMP="suite=$SUITE arch=$ARCH packages=${PACKAGES[*]}"

rootfs_ready() { [ -f "$ROOTFS/.erp-rootfs" ] && [ -x "$ROOTFS/usr/bin/python3" ]; }

safe_rm_tree() { # rm -rf a tree that must not have anything mounted in it
    local dir=$1
    [ -n "$(mounts_under "$dir")" ] && die "refusing to remove $dir: something is mounted under it"
    rm -rf --one-file-system "$dir"
}

make_rootfs() {
    local partial=$ROOTFS.partial
    safe_rm_tree "$partial"
    mkdir -p "$WORKDIR/debs"
    echo "debootstrap $SUITE from $MIRROR into $partial"
    # In a private mount namespace: debootstrap's own /proc and /sys mounts stay there.
    unshare --mount --propagation private -- debootstrap --variant=minbase --arch="$ARCH" \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" --cache-dir="$WORKDIR/debs" \
        "$SUITE" "$partial" "$MIRROR"
    safe_rm_tree "$ROOTFS"
    mv "$partial" "$ROOTFS"
    write_sources
    apt_upgrade
    echo "$ROOTFS_STAMP" >"$ROOTFS/.erp-rootfs"
}

write_sources() {
    local security=${MIRROR%/debian}/debian-security
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        if url_ok "$security/dists/$SUITE-security/Release"; then
            echo "deb $security $SUITE-security main"
        fi
    } >"$ROOTFS/etc/apt/sources.list"
    cat "$ROOTFS/etc/apt/sources.list"
}

apt_upgrade() {
    in_root --net host env DEBIAN_FRONTEND=noninteractive apt-get update -q
    in_root --net host env DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade
    in_root --net host env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends "${PACKAGES[@]}"
    in_root apt-get clean
}

update_rootfs() { # the package list changed since the root filesystem was made
    write_sources
    apt_upgrade
    echo "$ROOTFS_STAMP" >"$ROOTFS/.erp-rootfs"
}

copy_source() {
    local dest=$ROOTFS$SRC_IN
    safe_rm_tree "$dest"
    mkdir -p "$dest"
    if [ "$SOURCE" = head ]; then
        git -C "$REPO" archive --format=tar HEAD | tar -x -C "$dest"
        echo "copied HEAD ($(git -C "$REPO" rev-parse --short HEAD))"
    else
        # Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | sort -zu |
            while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done |
            tar --null -T - -cf -) | tar -x -C "$dest"
        echo "copied the working tree at $(git -C "$REPO" rev-parse --short HEAD)" \
            "($(git -C "$REPO" status --porcelain | wc -l) uncommitted changes included)"
    fi
    find "$dest" -type f | wc -l
}

venv_stamp() {
    { printf '%s\n' "${PIP_PINS[@]}"; cat "$REPO/pyproject.toml"; } | sha256sum | cut -c1-16
}

PIP_ENV=()
host_pip() { # PIP_ENV: pip in the root filesystem with the host's index, proxies and trusted CAs
    PIP_ENV=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-120}"
        PIP_CERT=/etc/ssl/certs/build-host-ca.crt)
    [ -n "${PIP_INDEX_URL:-}" ] && PIP_ENV+=("PIP_INDEX_URL=$PIP_INDEX_URL")
    local var
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!var:-}" ] && PIP_ENV+=("$var=${!var}")
    done
    # pip trusts what this machine trusts (a proxy's CA, if any).
    local bundle=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    cp -f "$bundle" "$ROOTFS/etc/ssl/certs/build-host-ca.crt"
}

make_venv() {
    local stamp
    stamp=$(venv_stamp)
    host_pip
    local pip=("${PIP_ENV[@]}")
    if [ "$(cat "$ROOTFS$VENV_IN/.erp-venv" 2>/dev/null || true)" = "$stamp" ]; then
        echo "reusing $VENV_IN ($stamp)"
    else
        safe_rm_tree "$ROOTFS$VENV_IN"
        in_root /usr/bin/python3 -m venv "$VENV_IN"
        in_root --net host "${pip[@]}" "$VENV_IN/bin/pip" install -q --upgrade pip setuptools wheel
        in_root --net host "${pip[@]}" "$VENV_IN/bin/pip" install -q "${PIP_PINS[@]}" "$SRC_IN"
        echo "$stamp" >"$ROOTFS$VENV_IN/.erp-venv"
    fi
    # This checkout itself, offline: its dependencies are in the venv already.
    in_root env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_IN/bin/pip" install -q --no-deps --no-build-isolation \
        --no-index --force-reinstall "$SRC_IN"
    in_root "$VENV_IN/bin/pip" check
    in_root "$VENV_IN/bin/python" -c 'import sys, platform; print("Python", platform.python_version(), "glibc", platform.libc_ver()[1])'
    in_root "$VENV_IN/bin/pip" freeze --all
}

unit_tests() {
    in_root sh -c "cd $SRC_IN && $VENV_IN/bin/python -m pytest tests/unit -q -p no:cacheprovider"
}

e2e_tests() { # the end-to-end suite, through Python 3.9 and then through the frozen onedir build
    in_root sh -c "cd $SRC_IN && $VENV_IN/bin/python -m pytest tests/netns -q -p no:cacheprovider"
    in_root sh -c "cd $SRC_IN && EGRESS_ROUTER_EXE=$SRC_IN/dist/egress-router/egress-router \
        $VENV_IN/bin/python -m pytest tests/netns -q -p no:cacheprovider"
}

build() {
    # The onedir's bootloader is compiled from PyInstaller's source, which pip downloads: with
    # the host's network, before build.sh (offline) finds it in build/bootloader/.
    host_pip
    in_root --net host "${PIP_ENV[@]}" sh -c "cd $SRC_IN && scripts/build-native.sh bootloader --python $VENV_IN/bin/python >/dev/null"
    in_root sh -c "cd $SRC_IN && scripts/build.sh --python $VENV_IN/bin/python --no-apt"
    local src=$ROOTFS$SRC_IN/dist
    safe_rm_tree "$OUT"
    mkdir -p "$OUT/onefile"
    cp -a "$src/egress-router" "$OUT/egress-router"
    cp -a "$src/onefile/egress-router" "$OUT/onefile/egress-router"
}

FLOOR_ONEDIR=
FLOOR_ONEFILE=
floor_check() {
    # The onedir on the host; the onefile inside the root filesystem, where the
    # PyInstaller that wrote it can unpack it.
    local rc=0
    FLOOR_ONEDIR=$("$REPO/scripts/check-glibc-floor.sh" "$OUT/egress-router" "$GLIBC_MAX") || rc=1
    # (This script's copy of the check: with --head the source may predate it.)
    install -m 0755 "$REPO/scripts/check-glibc-floor.sh" "$ROOTFS/usr/local/bin/check-glibc-floor"
    FLOOR_ONEFILE=$(in_root env PYTHON="$VENV_IN/bin/python" check-glibc-floor \
        "$SRC_IN/dist/onefile/egress-router" "$GLIBC_MAX") || rc=1
    printf '%s\n\n%s\n' "$FLOOR_ONEDIR" "$FLOOR_ONEFILE"
    return "$rc"
}

write_build_info() {
    {
        echo "egress-router portable build"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') ($SOURCE)"
        echo "root filesystem: Debian $SUITE ($(cat "$ROOTFS/etc/debian_version")), $MIRROR"
        in_root "$VENV_IN/bin/python" -c 'import platform; print("python:", platform.python_version(), "glibc:", platform.libc_ver()[1])'
        # shellcheck disable=SC2016  # dpkg-query's own ${field} syntax
        in_root dpkg-query -W -f '${Package} ${Version}\n' libc6 libnftables1 libnftnl11 libmnl0 libjansson4 libgmp10 libxtables12
        echo
        echo "pip freeze:"
        in_root "$VENV_IN/bin/pip" freeze
        echo
        echo "$FLOOR_ONEDIR"
        echo
        echo "$FLOOR_ONEFILE"
    } >"$OUT/build-info.txt"
}

# --- smoke test: VERSION and ADD/CHECK/DEL in namespaces made here ------------------------------
SMOKE_ID=
SMOKE_SUMMARY=()
MASTER=ermaster0
CONF='{"cniVersion":"1.0.0","name":"portable","type":"egress-router","interfaceArgs":{"master":"ermaster0"},"ip":{"addresses":["192.168.12.99/24"],"gateway":"192.168.12.1","destinations":["8080 tcp 203.0.113.26 80"]},"log_file":"/tmp/egress-router-log"}'

smoke_topology() {
    SMOKE_ID=$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')
    NODE=erp-$SMOKE_ID-node POD=erp-$SMOKE_ID-pod LAN=erp-$SMOKE_ID-lan
    local ns
    for ns in "$NODE" "$POD" "$LAN"; do
        ip netns add "$ns"
        NETNS+=("$ns")
        ip -n "$ns" link set lo up
    done
    # Every link is created inside a namespace made above; none touches the host's.
    ip -n "$NODE" link add "$MASTER" type veth peer name lan0 netns "$LAN"
    ip -n "$LAN" addr add 192.168.12.1/24 dev lan0
    ip -n "$LAN" link set lan0 up
    ip -n "$NODE" link set "$MASTER" up
    ip -n "$NODE" link add podveth0 type veth peer name eth0 netns "$POD"
    ip -n "$NODE" addr add 10.128.10.1/23 dev podveth0
    ip -n "$NODE" link set podveth0 up
    ip -n "$POD" addr add 10.128.10.18/23 dev eth0
    ip -n "$POD" link set eth0 up
    ip -n "$POD" route add default via 10.128.10.1
    echo "namespaces: $NODE (master $MASTER) $POD (eth0 10.128.10.18/23) $LAN (192.168.12.1/24)"
}

in_pod_root() { in_root --net "/run/netns/$POD" "$@"; } # a tool of the root filesystem, in the pod

pod_nat() { # pod_nat BACKEND: the pod's NAT rules
    if [ "$1" = iptables ]; then
        in_pod_root iptables-legacy -t nat -S
    elif command -v nft >/dev/null; then # the host's nft, or else the root filesystem's
        ip netns exec "$POD" nft list ruleset
    else
        in_pod_root nft list ruleset
    fi
}

pod_state() { # pod_state BACKEND: everything DEL must put back
    # (IPv6 link-local routes come and go with duplicate address detection, on their own.)
    ip -n "$POD" -4 route show table all
    ip -n "$POD" -6 route show table all | grep -v 'fe80::' || true
    ip -n "$POD" rule
    pod_nat "$1"
}

# plugin EXE COMMAND STDIN: the frozen executable in the root filesystem, in the node namespace
plugin() {
    in_root --net "/run/netns/$NODE" --netns-dir env CNI_COMMAND="$2" CNI_CONTAINERID="portable-smoke-$SMOKE_ID" CNI_NETNS="/run/netns/$POD" \
        CNI_IFNAME=net1 CNI_PATH=/opt/cni/bin "$1" <<<"$3"
}

expect() { # expect WHAT HAYSTACK NEEDLE
    case "$2" in
        *"$3"*) ;;
        *) echo "smoke: $1: expected '$3' in:"; echo "$2"; return 1 ;;
    esac
}

smoke_cycle() { # smoke_cycle LABEL EXE-IN-ROOTFS NAT-BACKEND
    local label=$1 exe=$2 backend=$3 conf out result before after t0 t_add t_check t_del
    conf=$CONF
    [ "$backend" = nftables ] || conf="${CONF%\}},\"natBackend\":\"$backend\"}"
    echo "== $label: $exe, natBackend $backend"
    out=$(plugin "$exe" VERSION "")
    expect "$label VERSION" "$out" '"supportedVersions"'
    expect "$label VERSION" "$out" '"1.0.0"'
    echo "VERSION: $out"

    before=$(pod_state "$backend")
    t0=$(now_ms)
    result=$(plugin "$exe" ADD "$conf")
    t_add=$(($(now_ms) - t0))
    echo "ADD result: $result"
    expect "$label ADD result" "$result" '"192.168.12.99/24"'
    after=$(ip -n "$POD" route)
    echo "pod routes after ADD:"; echo "$after"
    expect "$label ADD routes" "$after" "default via 192.168.12.1 dev net1"
    expect "$label ADD address" "$(ip -n "$POD" addr show net1)" "inet 192.168.12.99/24"
    after=$(pod_nat "$backend")
    echo "pod NAT rules after ADD ($backend):"; echo "$after"
    expect "$label ADD DNAT" "$after" "203.0.113.26"
    expect "$label ADD SNAT" "$after" "192.168.12.99"

    t0=$(now_ms)
    out=$(plugin "$exe" CHECK "${conf%\}},\"prevResult\":$result}")
    t_check=$(($(now_ms) - t0))
    echo "CHECK: ok${out:+ ($out)}"

    t0=$(now_ms)
    plugin "$exe" DEL "$conf"
    t_del=$(($(now_ms) - t0))
    after=$(pod_state "$backend")
    if [ "$before" != "$after" ]; then
        echo "smoke: $label: the pod's routes, rules or NAT rules differ after DEL:"
        diff <(echo "$before") <(echo "$after") || true
        return 1
    fi
    if ip -n "$POD" link show net1 >/dev/null 2>&1; then
        echo "smoke: $label: net1 is still in the pod after DEL"
        return 1
    fi
    ip -n "$NODE" link show "$MASTER" >/dev/null || { echo "smoke: $label: $MASTER is gone from the node"; return 1; }
    echo "DEL: ok, the pod's routes, rules and NAT rules are as before ADD"
    SMOKE_SUMMARY+=("$(printf '%-8s %-9s VERSION ok, ADD %d ms, CHECK %d ms, DEL %d ms, pod restored' \
        "$label" "$backend" "$t_add" "$t_check" "$t_del")")
}

smoke() {
    safe_rm_tree "$ROOTFS/opt/egress-router"
    mkdir -p "$ROOTFS/opt/egress-router/onefile"
    cp -a "$OUT/egress-router/." "$ROOTFS/opt/egress-router/"
    cp -a "$OUT/onefile/egress-router" "$ROOTFS/opt/egress-router/onefile/egress-router"
    rm -f "$ROOTFS/tmp/egress-router-log"
    smoke_topology
    smoke_cycle onedir /opt/egress-router/egress-router nftables
    smoke_cycle onefile /opt/egress-router/onefile/egress-router nftables
    # The second NAT backend: bundled libxtables, the root filesystem's libip4tc and extensions.
    smoke_cycle onedir /opt/egress-router/egress-router iptables
    echo "== plugin log (/tmp/egress-router-log in the root filesystem)"
    cat "$ROOTFS/tmp/egress-router-log" || true
    local ns
    for ns in "${NETNS[@]}"; do ip netns del "$ns"; done
    NETNS=()
}

# --- main --------------------------------------------------------------------------------------
mkdir -p "$WORKDIR" "$LOGDIR"
exec 9>"$WORKDIR/lock"
flock -n 9 || die "another build-portable.sh is using $WORKDIR"
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
        die "cannot install debootstrap"
fi

if [ "$NEW_ROOTFS" = 1 ]; then
    safe_rm_tree "$ROOTFS"
fi
if rootfs_ready; then
    MIRROR=$(awk '$1 == "deb" { print $2; exit }' "$ROOTFS/etc/apt/sources.list")
    log "reusing $ROOTFS (Debian $(cat "$ROOTFS/etc/debian_version"))"
    if [ "$(cat "$ROOTFS/.erp-rootfs")" != "$ROOTFS_STAMP" ]; then
        pick_mirror
        step rootfs-update update_rootfs
    fi
else
    pick_mirror
    log "Debian mirror: $MIRROR"
    step debootstrap make_rootfs
fi
step source copy_source
step venv make_venv
if [ "$TESTS" = 1 ]; then step unit-tests unit_tests; fi
step build build
step glibc-floor floor_check
write_build_info
if [ "$SMOKE" = 1 ]; then step smoke smoke; fi
if [ "$E2E" = 1 ]; then step e2e-tests e2e_tests; fi

TOTAL_MS=$(($(now_ms) - T_START))
[ -n "$(mounts_under "$ROOTFS")" ] && die "something is still mounted under $ROOTFS"
PY=$(in_root "$VENV_IN/bin/python" -c 'import platform; print(platform.python_version())')
echo
echo "portable build (Debian $SUITE, Python $PY, glibc floor $GLIBC_MAX):"
echo "  onedir   $OUT/egress-router/egress-router   $(du -sh --apparent-size "$OUT/egress-router" | cut -f1)"
echo "  onefile  $OUT/onefile/egress-router   $(du -sh --apparent-size "$OUT/onefile/egress-router" | cut -f1)"
echo "  info     $OUT/build-info.txt"
floor_summary() { # "PASS (35 ELF files, highest GLIBC_2.29)"
    sed -nE 's/^checked ([0-9]+) ELF files; highest GLIBC version referenced: (.*)$/\1 ELF files, highest GLIBC_\2/p' <<<"$1" |
        xargs -0 printf '%s (%s)' "$(tail -n1 <<<"$1" | cut -d: -f1)" | tr -d '\n'
}
echo "glibc floor $GLIBC_MAX: onedir $(floor_summary "$FLOOR_ONEDIR"); onefile and its unpacked contents $(floor_summary "$FLOOR_ONEFILE")"
if [ "$TESTS" = 1 ]; then
    echo "unit tests (Python $PY): $(grep -E '[0-9]+ (passed|failed)' "$LOGDIR/unit-tests.log" | tail -n1)"
fi
if [ "$E2E" = 1 ]; then
    echo "e2e tests in $SUITE: Python $PY $(grep -E '[0-9]+ (passed|failed)' "$LOGDIR/e2e-tests.log" | head -n1);" \
        "frozen onedir $(grep -E '[0-9]+ (passed|failed)' "$LOGDIR/e2e-tests.log" | tail -n1)"
fi
if [ "$SMOKE" = 1 ]; then
    echo "smoke test in $SUITE (namespaces erp-$SMOKE_ID-*, removed; times include nsenter, unshare and chroot):"
    printf '  %s\n' "${SMOKE_SUMMARY[@]}"
fi
echo "timings:"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-14s %6d.%ds\n' total $((TOTAL_MS / 1000)) $((TOTAL_MS % 1000 / 100))
echo "logs: $LOGDIR/"
