#!/usr/bin/env bash
# Regenerate docs/report/ (the report of the default ml-latest-small run) and the screenshots in
# docs/screenshots/: the report page, and `fmstore query` for the two demo questions of
# scripts/demo.sh, recorded as a terminal shows them (rich's HTML export) and photographed by
# headless Chromium.
#
#   scripts/screenshots.sh                    # trains and publishes in a temporary home
#   FMSTORE_HOME=.fmstore scripts/screenshots.sh   # reuses that home's latest run if it has one
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
data=${FMSTORE_DATA:-../shared/data/ml-latest-small}
export FMSTORE_HOME=${FMSTORE_HOME:-$(mktemp -d)}
fm() { "$PYTHON" -m fmstore "$@"; }
shots=docs/screenshots
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$(fm runs --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin) and 1 or "")')" ]; then
  fm --quiet train --data "$data"           # the defaults: k=64
fi
fm --quiet publish
fm --quiet report --out docs/report

# A command's output as a terminal shows it (colours on, 120 columns), saved as an HTML page
# that looks like a terminal window.
record() {
  local name=$1
  shift
  FORCE_COLOR=1 COLUMNS=120 fm "$@" >"$work/$name.ansi"
  "$PYTHON" - "$work/$name.ansi" "$work/$name.html" fmstore "$@" <<'PY'
import shlex
import sys

from rich.console import Console
from rich.text import Text

ansi, html, command = sys.argv[1], sys.argv[2], sys.argv[3:]
console = Console(record=True, width=120, file=open("/dev/null", "w"), force_terminal=True)
console.print(Text("$ ", style="green") + Text(shlex.join(command), style="bold"))
console.print(Text.from_ansi(open(ansi, encoding="utf-8").read()))
page = """<!DOCTYPE html><html><head><meta charset="UTF-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
pre {{ margin: 0; padding: 16px; color: #d4d4d4; background: #1e1e1e; line-height: 1.2;
      font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px; }}
</style></head><body><pre><code>{code}</code></pre></body></html>"""
text = console.export_text(clear=False)
open(html, "w", encoding="utf-8").write(
    console.export_html(inline_styles=True, code_format=page)
)
# the window height that shows every line (14 px type, line height 1.2, 16 px padding)
open(html + ".height", "w").write(str(40 + 17 * len(text.splitlines())))
PY
}

shoot() {  # page, png, width, height
  local profile
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --screenshot="$2" --window-size="$3,$4" \
    "file://$(realpath "$1")" 2>/dev/null
  rm -rf "$profile"
}

record query-movie query --movie "Toy Story (1995)" -n 10
record query-new-user query --rated "In the Army Now (1994)=5" \
  --rated "Terminator 2: Judgment Day (1991)=5" --rated "Die Hard: With a Vengeance (1995)=5" -n 10

mkdir -p "$shots"
shoot docs/report/report.html "$shots/report.png" 1000 3080
for name in query-movie query-new-user; do
  shoot "$work/$name.html" "$shots/$name.png" 1180 "$(cat "$work/$name.html.height")"
done
du -ch docs/report "$shots"/*.png | tail -1
