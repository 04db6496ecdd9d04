#!/usr/bin/env bash
# Builds the .deb for the host (board x86_64) and for aarch64 (board rpi4-aarch64, with the
# toolchain of scripts/cross-env.sh) and checks what each holds with dpkg-deb: the files,
# the conffile, the maintainer scripts, the architecture, and that the board's config and
# systemd drop-in are the ones packaged.
#
#   scripts/check-deb.sh            build and check both
#   scripts/check-deb.sh --install  also install the host package on this machine (dpkg -i),
#                                   check the user, config mode and enable link, then purge it
#
# Needs root on Debian (installs cargo-deb with cargo, and the cross toolchain once).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

install_test=0
[ "${1:-}" = "--install" ] && install_test=1

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
[ -f README.md ] || {
    echo "check-deb: README.md is missing (the package ships it)" >&2
    exit 1
}

out="$root/target/debian"
mkdir -p "$out"
fail=0
bad() {
    echo "FAIL $*"
    fail=1
}

# check DEB BOARD ARCH FILE_PATTERN: contents, control fields and the board's files.
check() {
    local deb=$1 board=$2 arch=$3 file_pattern=$4
    local info list
    info=$(dpkg-deb -I "$deb")
    list=$(dpkg-deb -c "$deb" | awk '{print $6}')
    grep -q "^ Package: wssed$" <<<"$info" || bad "$deb: package name is not wssed"
    grep -q "^ Architecture: $arch$" <<<"$info" || bad "$deb: architecture is not $arch"
    for script in postinst prerm postrm; do
        grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$script " <<<"$info" || bad "$deb: no executable $script"
    done
    [ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "/etc/wssed/wssed.toml" ] ||
        bad "$deb: conffiles is not exactly /etc/wssed/wssed.toml"
    for f in ./usr/bin/wssed ./usr/lib/systemd/system/wssed.service ./usr/lib/systemd/system/wssed.socket \
        ./usr/lib/systemd/system/wssed.service.d/board.conf ./usr/lib/sysusers.d/wssed.conf \
        ./etc/wssed/wssed.toml ./usr/share/doc/wssed/README.md ./usr/share/doc/wssed/copyright; do
        grep -qxF "$f" <<<"$list" || bad "$deb: missing $f"
    done
    local fs="$root/target/debian/extract-$board"
    rm -rf "$fs" && mkdir -p "$fs"
    dpkg-deb -x "$deb" "$fs"
    cmp -s "$fs/etc/wssed/wssed.toml" "board/$board/wssed.toml" || bad "$deb: config is not board/$board/wssed.toml"
    cmp -s "$fs/usr/lib/systemd/system/wssed.service.d/board.conf" "board/$board/wssed.service.d/board.conf" ||
        bad "$deb: drop-in is not board/$board's"
    cmp -s "$fs/usr/lib/systemd/system/wssed.service" systemd/wssed.service || bad "$deb: wssed.service differs"
    file -b "$fs/usr/bin/wssed" | grep -q "$file_pattern" || bad "$deb: usr/bin/wssed is not $file_pattern"
    [ "$(stat -c %a "$fs/usr/bin/wssed")" = 755 ] || bad "$deb: usr/bin/wssed is not mode 755"
    # The declared glibc must be at least the newest symbol version the binary uses.
    local need have
    need=$(objdump -T "$fs/usr/bin/wssed" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    have=$(sed -n 's/^ Depends:.*libc6[^(,]*(>= \([0-9.]*\)).*/\1/p' <<<"$info")
    if [ -z "$need" ] || [ -z "$have" ] || ! dpkg --compare-versions "$have" ge "$need"; then
        bad "$deb: Depends libc6 (>= ${have:-?}) but the binary needs glibc ${need:-?}"
    fi
    echo "---- $deb"
    grep -E '^ (Package|Version|Architecture|Depends|Installed-Size):' <<<"$info"
    echo "$list" | grep -v '/$'
    echo "size: $(stat -c %s "$deb") bytes"
}

# Host package: the board's capacities are compile-time, so they go into the build env.
(
    set -a
    . board/x86_64/env
    set +a
    cargo build --release --locked --bin wssed
)
host_deb="$out/wssed_x86_64.deb"
cargo deb --no-build --variant x86_64 --output "$host_deb"
check "$host_deb" x86_64 amd64 "x86-64"

# aarch64 package with the Debian cross toolchain.
(
    set -a
    . board/rpi4-aarch64/env
    set +a
    # shellcheck source=scripts/cross-env.sh
    . scripts/cross-env.sh
    cross_setup "$WSSED_TARGET"
    cross_cargo build --release --locked --bin wssed
    # The binary is stripped by the release profile; cargo-deb's host strip cannot read it.
    CARGO_TARGET_DIR="$root/target/cross" cargo deb --no-build --no-strip --target "$WSSED_TARGET" \
        --variant rpi4-aarch64 --output "$out/wssed_rpi4-aarch64.deb"
)
check "$out/wssed_rpi4-aarch64.deb" rpi4-aarch64 arm64 "ARM aarch64"

if [ "$install_test" = 1 ]; then
    if dpkg-query -W -f='${Status}' wssed 2>/dev/null | grep -q installed; then
        bad "install test: a wssed package is already installed here; not touching it"
    else
        echo "---- install test: dpkg -i $host_deb"
        dpkg -i "$host_deb" >/dev/null
        getent passwd wssed >/dev/null || bad "install: no wssed user"
        [ "$(stat -c '%U:%G %a' /etc/wssed/wssed.toml)" = "root:wssed 640" ] ||
            bad "install: /etc/wssed/wssed.toml is $(stat -c '%U:%G %a' /etc/wssed/wssed.toml), want root:wssed 640"
        [ -L /etc/systemd/system/multi-user.target.wants/wssed.service ] || bad "install: wssed.service not enabled"
        [ -e /etc/systemd/system/sockets.target.wants/wssed.socket ] && bad "install: wssed.socket enabled"
        /usr/bin/wssed --version >/dev/null || bad "install: /usr/bin/wssed --version failed"
        dpkg --purge wssed >/dev/null
        [ -e /usr/bin/wssed ] && bad "purge: /usr/bin/wssed left behind"
        [ -e /etc/wssed/wssed.toml ] && bad "purge: /etc/wssed/wssed.toml left behind"
        [ -L /etc/systemd/system/multi-user.target.wants/wssed.service ] && bad "purge: enable link left behind"
        echo "install, enable and purge: done"
    fi
fi

if [ "$fail" != 0 ]; then
    echo "deb: FAILED"
    exit 1
fi
echo "deb: all checks passed"
