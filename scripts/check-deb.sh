#!/usr/bin/env bash
# Builds every board's .deb the way README's "Install on a Raspberry Pi" says, literally: its
# first code block runs once per board (its `board=` line set to that board), with `cross`
# standing for the same cargo command run with Debian's toolchain (no Docker here; see
# scripts/cross-env.sh). Then each package is checked with dpkg-deb: the files, the conffile,
# the maintainer scripts, the Architecture the board's env names, the board's config and
# systemd drop-in, a static binary with no C library dependency, and what the packaged binary
# reports (`--version` against board/BOARD/env, under qemu for ARM).
#
#   scripts/check-deb.sh [--install] [BOARD...]   default: every board
#       --install  also install the host's package on this machine (dpkg -i), check the user,
#                  config mode and enable link, then purge it
#
# Needs root on Debian (installs cargo-deb with cargo, and the cross toolchain once).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

install_test=0
if [ "${1:-}" = "--install" ]; then
    install_test=1
    shift
fi
boards=("$@")
[ ${#boards[@]} -gt 0 ] || mapfile -t boards < <(cd board && ls -d -- */ | tr -d /)

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
[ -f README.md ] || {
    echo "check-deb: README.md is missing (the package ships it)" >&2
    exit 1
}
host=$(rustc -vV | sed -n 's/^host: //p')

fail=0
bad() {
    echo "FAIL $*"
    fail=1
}

# The README's recipe: the first ```sh block after the section's heading.
recipe=$(awk '/^## Install on a Raspberry Pi/{s=1} s&&/^```sh$/{b=1; next} b&&/^```$/{exit} b{print}' README.md)
grep -q '^board=' <<<"$recipe" || {
    echo "check-deb: README's Raspberry Pi recipe has no board= line" >&2
    exit 1
}
scp_glob=$(grep -o 'scp target/debian/[^ ]*\.deb' README.md | head -n 1 | sed 's/^scp //')
[ -n "$scp_glob" ] || {
    echo "check-deb: README's Raspberry Pi section names no scp'd package" >&2
    exit 1
}

# `cross build ... --target T ...` without a container: the same cargo command, with Debian's
# cross toolchain for a foreign target. Exported to the recipe's shell.
cross_shim='
cross() {
    local args=() target="" host
    while [ $# -gt 0 ]; do
        case "$1" in
        --target) target=$2; shift 2 ;;
        --target=*) target=${1#--target=}; shift ;;
        *) args+=("$1"); shift ;;
        esac
    done
    host=$(rustc -vV | sed -n "s/^host: //p")
    if [ "$target" = "$host" ]; then
        cargo "${args[@]}" --target "$target"
    else
        ( . scripts/cross-env.sh && cross_setup "$target" && cross_cargo "${args[@]}" )
    fi
}
'

# check DEB BOARD: contents, control fields, the board's files and the packaged binary.
check() {
    local deb=$1 board=$2
    local info list arch target
    arch=$(sed -n 's/^WSSED_DEB_ARCH=//p' "board/$board/env")
    target=$(sed -n 's/^WSSED_TARGET=//p' "board/$board/env")
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
    cmp -s "$fs/usr/bin/wssed" "target/$target/release/wssed" || bad "$deb: usr/bin/wssed is not target/$target/release/wssed"
    [ "$(stat -c %a "$fs/usr/bin/wssed")" = 755 ] || bad "$deb: usr/bin/wssed is not mode 755"
    # Static: nothing from the board's C library, so no dependency on it either.
    local depends
    depends=$(dpkg-deb -f "$deb" Depends)
    if file -b "$fs/usr/bin/wssed" | grep -Eq 'statically linked|static-pie linked'; then
        grep -q libc6 <<<"$depends" && bad "$deb: a static binary, but Depends: $depends"
    else
        bad "$deb: usr/bin/wssed is dynamically linked; the boards ship static binaries (board/$board/env)"
    fi
    # What the packaged binary says it is.
    if [ "$target" = "$host" ]; then
        scripts/check-build-info.sh "$board" "$fs/usr/bin/wssed" || fail=1
    else
        (
            # shellcheck source=scripts/cross-env.sh
            . scripts/cross-env.sh
            cross_setup "$target"
            cross_qemu_wrapper "$fs/usr/bin/wssed" "$fs/wssed-qemu" "$(sed -n 's/^WSSED_QEMU_CPU=//p' "board/$board/env")"
            scripts/check-build-info.sh "$board" "$fs/wssed-qemu"
        ) || fail=1
    fi
    echo "---- $deb"
    grep -E '^ (Package|Version|Architecture|Depends|Installed-Size):' <<<"$info" || true
    echo "$list" | grep -v '/$'
    echo "size: $(stat -c %s "$deb") bytes"
}

for board in "${boards[@]}"; do
    echo "==== $board: README's recipe"
    t0=$(date +%s)
    if ! bash -euo pipefail -c "$cross_shim"$'\n'"$(sed "s/^board=.*/board=$board/" <<<"$recipe")" >"target/recipe-$board.log" 2>&1; then
        tail -n 40 "target/recipe-$board.log"
        bad "$board: README's recipe failed (target/recipe-$board.log)"
        continue
    fi
    echo "recipe: $(($(date +%s) - t0)) s"
    # What the README then copies to the Pi: exactly one package.
    mapfile -t debs < <(board=$board bash -c "ls -- ${scp_glob}" 2>/dev/null)
    if [ ${#debs[@]} -ne 1 ]; then
        bad "$board: README's scp path $scp_glob matches ${#debs[@]} packages: ${debs[*]}"
        continue
    fi
    check "${debs[0]}" "$board"
done

if [ "$install_test" = 1 ]; then
    host_board=$(grep -l "^WSSED_TARGET=$host$" board/*/env | head -n 1 | cut -d/ -f2)
    host_deb=$(ls target/debian/wssed_*_"$host_board".deb 2>/dev/null | head -n 1)
    if [ -z "$host_deb" ]; then
        bad "install test: no package for the host's board ($host_board) was built"
    elif dpkg-query -W -f='${Status}' wssed 2>/dev/null | grep -q installed; then
        bad "install test: a wssed package is already installed here; not touching it"
    else
        echo "---- install test: dpkg -i $host_deb"
        dpkg -i "$host_deb" >/dev/null
        getent passwd wssed >/dev/null || bad "install: no wssed user"
        [ "$(stat -c '%U:%G %a' /etc/wssed/wssed.toml)" = "root:wssed 640" ] ||
            bad "install: /etc/wssed/wssed.toml is $(stat -c '%U:%G %a' /etc/wssed/wssed.toml), want root:wssed 640"
        [ -L /etc/systemd/system/multi-user.target.wants/wssed.service ] || bad "install: wssed.service not enabled"
        [ -e /etc/systemd/system/sockets.target.wants/wssed.socket ] && bad "install: wssed.socket enabled"
        scripts/check-build-info.sh "$host_board" /usr/bin/wssed || bad "install: /usr/bin/wssed --version"
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
