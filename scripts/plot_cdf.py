#!/usr/bin/env python3
"""Latency CDF plot (PNG, via gnuplot) from the JSON lines that scripts/bench.sh records.

usage: plot_cdf.py RESULTS.jsonl OUT.png

Panels: push->device latency at the paced rate, push->device latency unpaced (saturation), and
the /sse/send round trip when measured. Every round of a scenario is drawn, one color per server. Each JSON line carries `cdf_us`: [[percent, us], ...].
"""
import json
import os
import subprocess
import sys
import tempfile


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


COLORS = {"wssed": "#9400d3", "nchan": "#009e73"}
SEND_COLORS = {1: "#9400d3", 32: "#e69f00"}


def panels(rows):
    """Series are (key, label, color, cdf): rounds of one server share a key, a color and one
    legend entry."""
    paced, unpaced, send = [], [], []
    for r in rows:
        if "cdf_us" not in r or "error" in r:
            continue
        name = r.get("target", "?")
        color = COLORS.get(name, "#000000")
        if r.get("scenario") == "push" and r.get("rate"):
            paced.append((name, f"{name} ({r['rate']}/s)", color, r["cdf_us"]))
        elif r.get("scenario") == "push":
            unpaced.append((name, f"{name} ({r.get('connections')} conns)", color, r["cdf_us"]))
        elif r.get("scenario") == "send":
            conns = r.get("connections")
            send.append((conns, f"{name} ({conns} conn)", SEND_COLORS.get(conns, "#000000"), r["cdf_us"]))
    out = []
    if paced:
        out.append(("push -> device latency, paced", paced))
    if unpaced:
        out.append(("push -> device latency, unpaced", unpaced))
    if send:
        out.append(("/sse/send round trip", send))
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, png = sys.argv[1], sys.argv[2]
    groups = panels(load(src))
    if not groups:
        print("plot_cdf.py: no CDF data in", src, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        cmds = [
            f"set terminal pngcairo size {560 * len(groups)},460 font ',10'",
            f"set output '{png}'",
            f"set multiplot layout 1,{len(groups)} title 'Latency CDF ({os.path.basename(src)})'",
            "set logscale x",
            "set xlabel 'microseconds (log)'",
            "set ylabel 'fraction'",
            "set yrange [0:1]",
            "set grid",
            "set key bottom right",
        ]
        n = 0
        for title, series in groups:
            plots = []
            seen = set()
            for key, label, color, cdf in series:
                dat = os.path.join(tmp, f"s{n}.dat")
                n += 1
                with open(dat, "w", encoding="utf-8") as f:
                    for pct, us in cdf:
                        f.write(f"{max(us, 0.1)} {pct / 100.0}\n")
                key_title = "notitle" if key in seen else f"title '{label}'"
                seen.add(key)
                plots.append(f"'{dat}' using 1:2 with lines lw 2 lc rgb '{color}' {key_title}")
            cmds.append(f"set title '{title}'")
            cmds.append("plot " + ", ".join(plots))
        cmds.append("unset multiplot")
        subprocess.run(["gnuplot"], input="\n".join(cmds) + "\n", text=True, check=True)
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
