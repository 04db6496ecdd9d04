#!/usr/bin/env bash
# Packages one board's built binary as a .deb (cargo-deb, variant BOARD of Cargo.toml's
# [package.metadata.deb]): the board's config and systemd drop-in, Architecture from
# board/BOARD/env's WSSED_DEB_ARCH. The last line of output is the package's path,
# target/debian/wssed_<version>_<board>.deb.
#
#   scripts/package-board.sh rpi4-aarch64     after `cross build` or scripts/build-board.sh
#
# --no-strip: release binaries are stripped by the profile already, and cargo-deb's strip is
# the host's, which cannot read a binary of another architecture (the step that failed).
# Two control fields are set afterwards, files untouched: Architecture to WSSED_DEB_ARCH
# (cargo-deb names it from the Rust target; the Pi Zero/1 binary is built for
# arm-unknown-linux-gnueabi, armel to cargo-deb, but is static and meant for Raspberry Pi OS
# armhf), and an empty `Depends:` line, which cargo-deb writes for a static binary, is dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ] || [ ! -f "board/$1/env" ]; then
    echo "usage: $0 BOARD   (BOARD: $(cd board && ls -d -- */ | tr -d / | tr '\n' ' '))" >&2
    exit 2
fi
board=$1
set -a
# shellcheck source=/dev/null
. "board/$board/env"
set +a
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
bin="target/$WSSED_TARGET/release/wssed"
[ -x "$bin" ] || {
    echo "package-board: no $bin; build it first (cross build, or scripts/build-board.sh $board)" >&2
    exit 1
}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
mkdir -p target/debian
deb="target/debian/wssed_${version}_${board}.deb"
cargo deb --no-build --no-strip --target "$WSSED_TARGET" --variant "$board" --output "$deb" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -R "$deb" "$tmp/pkg"
control="$tmp/pkg/DEBIAN/control"
cp "$control" "$tmp/control.cargo-deb"
sed -i -e "s/^Architecture: .*/Architecture: $WSSED_DEB_ARCH/" -e '/^Depends: *$/d' "$control"
if ! cmp -s "$control" "$tmp/control.cargo-deb"; then
    diff "$tmp/control.cargo-deb" "$control" | sed -n 's/^[<>] /package-board: control: &/p' >&2 || true
    dpkg-deb --root-owner-group -Zxz -b "$tmp/pkg" "$deb" >/dev/null
fi
echo "$deb"
