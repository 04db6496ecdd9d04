# shellcheck shell=bash
# Sourced by cross-test.sh and check-deb.sh: a cross toolchain for ARM Linux without Docker.
#
# Why not `cross`: it needs a Docker engine. Why not `rustup target add`: the machines this
# project runs on reach Debian's archive and crates.io, not the Rust toolchain servers.
# So: Debian bookworm's `rustc-web` (in /usr/bin, called through RUSTC so it never shadows
# rustup's cargo/rustc on PATH), the target's standard library from Debian's
# `libstd-rust-web-dev:<arch>`, Debian's cross gcc for linking and for mimalloc's C code,
# and qemu-user to run the result.
#
# The foreign-architecture package lists live in private apt state directories, one per
# architecture so updating one does not prune the other. Adding arm64/armhf to dpkg itself
# would make every later `apt-get update` on the machine fail whenever one foreign index
# is out of sync on the mirror (seen here for armhf), and installing the multi-arch std
# package would drag in libllvm for the foreign arch.
#
# When the mirror does not carry the target's std at exactly the host rustc-web version,
# the std is built from Debian's `rust-web-src` of that version (`-Zbuild-std`, enabled on
# this stable compiler with RUSTC_BOOTSTRAP=1, for this build only).
#
# ARMv6 (Pi Zero/1) is `arm-unknown-linux-gnueabi`: ARMv6 code with the soft-float ABI, linked
# statically against Debian's armel glibc (ARMv5TE code, which ARMv6 runs). Debian's armhf glibc
# and gcc runtime are ARMv7 (Thumb-2) code and die on an ARMv6 core; no ARMv6 hard-float C
# library is packaged. A static soft-float binary runs on any ARM Linux, Raspberry Pi OS armhf
# included. Debian has no std for this triple (its armel Rust is armv5te), so std is built.
#
# qemu runs load exactly one C library, whatever else the machine has installed: none for a
# static binary, else the cross sysroot's, found first through LD_LIBRARY_PATH. With `-L`
# alone the sysroot's ld.so also reads the host's /etc/ld.so.cache, which lists multiarch
# libraries (libc6:arm64 installed for cross-building): the sysroot's ld.so then maps a libc
# of another version and the program spins in pthread_create (scripts/qemu-libc-trap.sh).
#
# Builds go to target/<triple>/release, the layout `cross` and cargo-deb use (for a target whose
# std is built, a link into target/build-std).
#
# Usage: source scripts/cross-env.sh; cross_setup TARGET; cross_cargo build --release ...

CROSS_HOME=${WSSED_CROSS_HOME:-/opt/wssed-cross}
# Longest an apt-get call may take (a stuck mirror fails the step with its line, not at CI's limit).
CROSS_APT_TIMEOUT_SECS=${CROSS_APT_TIMEOUT_SECS:-900}

cross_log() { printf 'cross: %s\n' "$*" >&2; }
cross_die() {
    printf 'cross: error: %s\n' "$*" >&2
    exit 1
}

# Installs the listed Debian packages that are missing; silent when all are there.
cross_apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    cross_log "installing ${missing[*]}"
    # A mirror index out of sync makes update exit non-zero while the rest is usable.
    timeout "$CROSS_APT_TIMEOUT_SECS" apt-get update -qq >/dev/null 2>&1 || cross_log "apt-get update reported errors; going on with the lists it has"
    DEBIAN_FRONTEND=noninteractive timeout "$CROSS_APT_TIMEOUT_SECS" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        cross_die "apt-get install ${missing[*]} failed"
}

# apt-get/apt-cache with package lists of their own that include the foreign architecture.
cross_apt_private() {
    local tool=$1
    shift
    local d="$CROSS_HOME/apt-$CROSS_DEB_ARCH"
    timeout "$CROSS_APT_TIMEOUT_SECS" "$tool" -q \
        -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o Dir::State::status="$d/status" \
        -o APT::Architecture="$(dpkg --print-architecture)" -o APT::Architectures="$CROSS_DEB_ARCH" \
        -o APT::Sandbox::User=root "$@"
}

# Refreshes the private lists, at most once a day per architecture (a lagging mirror
# index would otherwise be fetched again on every run).
cross_private_update() {
    local d="$CROSS_HOME/apt-$CROSS_DEB_ARCH" stamp="$CROSS_HOME/apt-$CROSS_DEB_ARCH/updated"
    if [ -n "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
        return 0
    fi
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    touch "$d/status"
    cross_apt_private apt-get update >/dev/null 2>&1 ||
        cross_log "private apt-get update for $CROSS_DEB_ARCH reported errors; going on with the lists it has"
    touch "$stamp"
}

# Succeeds when the private lists offer PACKAGE at exactly VERSION.
cross_private_has() {
    cross_apt_private apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -qxF "$2"
}

# Downloads PACKAGE=VERSION and unpacks it into DIR: a foreign-arch package (pkg:arch)
# through the private lists, an arch "all" one through the machine's own lists (a failed
# foreign index makes apt drop the whole suite from the private lists, arch "all" included).
cross_unpack() {
    local pkg=$1 ver=$2 dir=$3 debs="$CROSS_HOME/debs"
    local name=${pkg%%:*} arch=${pkg#*:}
    mkdir -p "$debs" "$dir"
    if [ "$arch" = "$pkg" ]; then
        arch=all
        if ! (cd "$debs" && timeout "$CROSS_APT_TIMEOUT_SECS" apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null 2>&1); then
            timeout "$CROSS_APT_TIMEOUT_SECS" apt-get update -qq >/dev/null 2>&1 || cross_log "apt-get update reported errors; going on with the lists it has"
            (cd "$debs" && timeout "$CROSS_APT_TIMEOUT_SECS" apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null 2>&1) ||
                cross_die "apt-get download $pkg=$ver failed"
        fi
    else
        (cd "$debs" && cross_apt_private apt-get download "$pkg=$ver" >/dev/null 2>&1) ||
            cross_die "apt-get download $pkg=$ver failed"
    fi
    local file="$debs/${name}_${ver//:/%3a}_${arch}.deb"
    [ -f "$file" ] || cross_die "downloaded $pkg but found no $file"
    dpkg-deb -x "$file" "$dir"
}

# Sets CROSS_* for TARGET and makes sure every piece of the toolchain is installed.
cross_setup() {
    CROSS_TARGET=$1
    # CROSS_STD_DEB=0: Debian packages no std for this triple; build it from source.
    CROSS_STD_DEB=1
    case "$CROSS_TARGET" in
    aarch64-unknown-linux-gnu)
        CROSS_DEB_ARCH=arm64 CROSS_GNU=aarch64-linux-gnu CROSS_QEMU=qemu-aarch64-static ;;
    armv7-unknown-linux-gnueabihf)
        CROSS_DEB_ARCH=armhf CROSS_GNU=arm-linux-gnueabihf CROSS_QEMU=qemu-arm-static ;;
    arm-unknown-linux-gnueabi)
        CROSS_DEB_ARCH=armel CROSS_GNU=arm-linux-gnueabi CROSS_QEMU=qemu-arm-static CROSS_STD_DEB=0 ;;
    arm-unknown-linux-gnueabihf)
        cross_die "arm-unknown-linux-gnueabihf (ARMv6 hard-float) is not built here: Debian's armhf C library and gcc
runtime are ARMv7 code, which an ARMv6 core cannot run. The Pi Zero/1 board builds arm-unknown-linux-gnueabi,
statically linked (board/rpi-zero-armv6/env); that binary runs on Raspberry Pi OS armhf." ;;
    *) cross_die "unknown target '$CROSS_TARGET' (aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | arm-unknown-linux-gnueabi)" ;;
    esac
    command -v apt-get >/dev/null || cross_die "needs Debian/Ubuntu (apt-get)"
    [ "$(id -u)" -eq 0 ] || cross_die "needs root to install packages"
    CROSS_LIBC_ROOT=/usr/$CROSS_GNU

    cross_apt_install rustc-web "gcc-$CROSS_GNU" "libc6-dev-$CROSS_DEB_ARCH-cross" qemu-user-static
    CROSS_RUST_VERSION=$(dpkg-query -W -f='${Version}' rustc-web)
    # Dependencies raise their minimum Rust over time: keep rustc-web at the newest the
    # machine's lists offer.
    local candidate
    candidate=$(timeout "$CROSS_APT_TIMEOUT_SECS" apt-cache policy rustc-web 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] &&
        dpkg --compare-versions "$candidate" gt "$CROSS_RUST_VERSION"; then
        cross_log "upgrading rustc-web $CROSS_RUST_VERSION -> $candidate"
        DEBIAN_FRONTEND=noninteractive timeout "$CROSS_APT_TIMEOUT_SECS" apt-get install -y -qq --no-install-recommends "rustc-web=$candidate" >/dev/null ||
            cross_die "apt-get install rustc-web=$candidate failed"
        CROSS_RUST_VERSION=$candidate
    fi
    local host_triple sysroot tmp
    host_triple=$(/usr/bin/rustc -vV | sed -n 's/^host: //p')
    sysroot="$CROSS_HOME/rust-$CROSS_RUST_VERSION"
    mkdir -p "$sysroot/lib/rustlib" "$sysroot/bin"
    # The host std stays Debian's own (build scripts and proc macros link against it).
    ln -sfn "/usr/lib/rustlib/$host_triple" "$sysroot/lib/rustlib/$host_triple"

    CROSS_BUILD_STD=0
    if ! compgen -G "$sysroot/lib/rustlib/$CROSS_TARGET/lib/libstd-*.rlib" >/dev/null; then
        local std_pkg="libstd-rust-web-dev:$CROSS_DEB_ARCH"
        if [ "$CROSS_STD_DEB" = 1 ]; then
            cross_private_has "$std_pkg" "$CROSS_RUST_VERSION" || cross_private_update
        fi
        if [ "$CROSS_STD_DEB" = 1 ] && cross_private_has "$std_pkg" "$CROSS_RUST_VERSION"; then
            cross_log "unpacking $std_pkg $CROSS_RUST_VERSION"
            tmp=$(mktemp -d)
            cross_unpack "$std_pkg" "$CROSS_RUST_VERSION" "$tmp"
            rm -rf "${sysroot:?}/lib/rustlib/$CROSS_TARGET"
            mv "$tmp/usr/lib/rustlib/$CROSS_TARGET" "$sysroot/lib/rustlib/$CROSS_TARGET"
            rm -rf "$tmp"
        else
            CROSS_BUILD_STD=1
        fi
    fi
    if [ "$CROSS_BUILD_STD" = 1 ] && [ ! -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ]; then
        cross_log "no Debian std for $CROSS_TARGET at $CROSS_RUST_VERSION: building std from rust-web-src"
        tmp=$(mktemp -d)
        cross_unpack rust-web-src "$CROSS_RUST_VERSION" "$tmp"
        rm -rf "$sysroot/lib/rustlib/src"
        mkdir -p "$sysroot/lib/rustlib/src"
        mv "$(readlink -f "$tmp/usr/lib/rustlib/src/rust")" "$sysroot/lib/rustlib/src/rust"
        rm -rf "$tmp"
    fi

    # cargo asks RUSTC for its sysroot (build-std reads the sources from there), so the
    # sysroot goes into a wrapper rather than RUSTFLAGS.
    CROSS_RUSTC="$sysroot/bin/rustc"
    printf '#!/bin/sh\nexec /usr/bin/rustc --sysroot="%s" "$@"\n' "$sysroot" >"$CROSS_RUSTC"
    chmod +x "$CROSS_RUSTC"
}

# Runs cargo for CROSS_TARGET with the cross environment; the host environment is left alone.
cross_cargo() {
    local t=${CROSS_TARGET^^}
    t=${t//-/_}
    local tl=${CROSS_TARGET//-/_}
    local std_args=()
    local bootstrap=()
    if [ "$CROSS_BUILD_STD" = 1 ]; then
        std_args=("-Zbuild-std=std,panic_abort")
        bootstrap=(RUSTC_BOOTSTRAP=1)
    fi
    local sub=$1 dir=${CROSS_TARGET_DIR:-target}
    shift
    if [ "$CROSS_BUILD_STD" = 1 ]; then
        # A build with -Zbuild-std rebuilds the host's proc macros for itself, which makes
        # every other target's dependents stale (a minute of rebuild at each switch). In a
        # directory of its own, the other builds stay fresh; target/<triple> points into it,
        # the layout cross and cargo-deb use.
        mkdir -p "$dir/build-std/$CROSS_TARGET"
        if [ ! -L "$dir/$CROSS_TARGET" ]; then
            rm -rf "${dir:?}/$CROSS_TARGET"
            ln -s "build-std/$CROSS_TARGET" "$dir/$CROSS_TARGET"
        fi
        dir="$dir/build-std"
    fi
    # The runner (`cargo test` under qemu) loads only the sysroot's C library; a static test
    # binary runs under it as well.
    env "${bootstrap[@]}" RUSTC="$CROSS_RUSTC" \
        "CARGO_TARGET_${t}_LINKER=$CROSS_GNU-gcc" \
        "CC_${tl}=$CROSS_GNU-gcc" "AR_${tl}=$CROSS_GNU-ar" \
        "CARGO_TARGET_${t}_RUNNER=$(cross_qemu_command "${WSSED_QEMU_CPU:-}")" \
        cargo "$sub" "${std_args[@]}" --target "$CROSS_TARGET" --target-dir "$dir" "$@"
}

# Succeeds when BINARY (an ELF file) has no program interpreter: a static binary.
cross_is_static() {
    ! LC_ALL=C "$CROSS_GNU-readelf" -lW "$1" | grep -q 'Requesting program interpreter'
}

# The qemu-user command line for CROSS_TARGET that loads only the sysroot's C library, CPU
# model CPU (empty: qemu's default). A static binary loads none under it.
cross_qemu_command() {
    local cpu=${1:-}
    printf '%s%s -L %s -E LD_LIBRARY_PATH=%s/lib' "$CROSS_QEMU" "${cpu:+ -cpu $cpu}" "$CROSS_LIBC_ROOT" "$CROSS_LIBC_ROOT"
}

# Writes OUT, an executable script that runs BINARY under qemu-user with CPU model CPU (empty:
# qemu's default). A static binary runs with no sysroot at all: nothing is loaded from the host.
cross_qemu_wrapper() {
    local bin=$1 out=$2 cpu=${3:-} qemu
    if cross_is_static "$bin"; then
        qemu="$CROSS_QEMU${cpu:+ -cpu $cpu}"
    else
        qemu=$(cross_qemu_command "$cpu")
    fi
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$bin" >"$out"
    chmod +x "$out"
}
