#!/usr/bin/env bash
# Rewrites README.md's settings table from the settings! table in src/ops/settings/table.rs
# (the unit test the_readme_settings_table_is_the_table_in_code prints what it expects).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(cargo test --quiet --lib the_readme_settings_table_is_the_table_in_code 2>&1 || true)
python3 - "$out" <<'PY'
import sys
out = sys.argv[1]
marker = "put this between the markers:\n"
if marker not in out:
    print("README.md's settings table is up to date")
    sys.exit(0)
table = out.split(marker, 1)[1]
table = table[: table.index("\n\n") + 1]
begin = "<!-- settings-table: generated from src/ops/settings/table.rs -->\n"
end = "<!-- settings-table: end -->"
readme = open("README.md").read()
start = readme.index(begin) + len(begin)
stop = readme.index(end, start)
open("README.md", "w").write(readme[:start] + table + readme[stop:])
print("README.md's settings table rewritten")
PY
