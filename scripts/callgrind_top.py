#!/usr/bin/env python3
"""Top functions of a callgrind dump, per push, as markdown tables.

    callgrind_top.py DUMP PUSHES [N]

Inclusive: callgrind_annotate's inclusive rows that stand for a whole function (those it tags
with the object file, `[.../wssed]`); rows without the tag are inlined fragments of a caller.
Self: callgrind_annotate's exclusive rows summed by function name, so code inlined into a
function counts as that function's own (fat LTO inlines most of the crate into a few closures).
The rows above `main` (libc start-up, `main`, the runtime's entry) are left out of the inclusive
table: they hold everything. Exclusive costs that callgrind_annotate puts on those root frames
(an artefact of zeroing the counters with frames on the stack) are left out of the self table.
"""

import re
import subprocess
import sys

ROW = re.compile(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$")
ROOTS = ("(below main)", "main", "wssed::main", "std::sys::backtrace::__rust_begin_short_backtrace")


def annotate(dump, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100",
         "--show=Ir", "--sort=Ir", "--auto=no", dump],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    started = False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        m = ROW.match(line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(3)))
    return rows


def split(rest):
    """(function name, has object tag) from `file:function [object]`."""
    tagged = rest.endswith("]") and " [" in rest
    if tagged:
        rest = rest[: rest.rindex(" [")]
    _, _, fn = rest.partition(":")
    return fn.strip(), tagged


def short(fn):
    fn = re.sub(r"<([^<>]*) as ([^<>]*)>", r"<\1 as \2>", fn)
    return fn if len(fn) <= 90 else fn[:87] + "..."


def is_root(fn):
    return fn in ROOTS or fn.startswith("0x0") or fn.startswith("__libc_start_main")


def summary_ir(dump):
    """Ir total from the dump's `summary:` (or `totals:`) line; Ir is the first event."""
    with open(dump) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 1


def main():
    dump, pushes = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    total = summary_ir(dump)
    incl = []
    for ir, rest in annotate(dump, True):
        fn, tagged = split(rest)
        if tagged and not is_root(fn):
            incl.append((ir, fn))
    selfc = {}
    for ir, rest in annotate(dump, False):
        fn, _ = split(rest)
        if is_root(fn):
            continue
        selfc[fn] = selfc.get(fn, 0) + ir
    print(f"Instructions in the dump: {total:,} over {pushes:,} pushes = {total / pushes:,.0f} per push.\n")
    print("| inclusive Ir per push | share | function |")
    print("| ---: | ---: | --- |")
    for ir, fn in incl[:n]:
        print(f"| {ir / pushes:,.0f} | {100 * ir / total:.1f} % | `{short(fn)}` |")
    print()
    # Groups of self cost that a single row hides: the allocator and the C library helpers.
    groups = {
        "allocator (mimalloc `mi_*`)": lambda f: f.startswith(("mi_", "_mi_")),
        "`memset`": lambda f: "memset" in f,
        "`memcpy`/`memmove`": lambda f: "memcpy" in f or "memmove" in f,
        "clock reads (`Instant::now`, `clock_gettime`)": lambda f: "Timespec" in f or "clock_gettime" in f,
    }
    print("| self Ir per push | share | group |")
    print("| ---: | ---: | --- |")
    for label, test in groups.items():
        ir = sum(v for f, v in selfc.items() if test(f))
        print(f"| {ir / pushes:,.0f} | {100 * ir / total:.1f} % | {label} |")
    print()
    print("| self Ir per push (inlined code included) | share | function |")
    print("| ---: | ---: | --- |")
    for fn, ir in sorted(selfc.items(), key=lambda kv: -kv[1])[:n]:
        print(f"| {ir / pushes:,.0f} | {100 * ir / total:.1f} % | `{short(fn)}` |")


if __name__ == "__main__":
    main()
