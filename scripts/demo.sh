#!/usr/bin/env bash
# The main job end to end on the embedded default (SQLite + Qdrant Edge under FMSTORE_HOME):
# ml-latest-small (the local copy if there is one, else downloaded from GroupLens), train,
# publish, then the original notebook's two questions.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FMSTORE_HOME=${FMSTORE_HOME:-.fmstore}
fm=.venv/bin/fmstore
data=${FMSTORE_DATA:-../shared/data/ml-latest-small}
if [ ! -f "$data/ratings.csv" ]; then
  data=$($fm data fetch ml-latest-small)
fi
$fm train --data "$data"
$fm publish
echo "== movies like Toy Story"
$fm query --movie "Toy Story (1995)" -n 10
echo "== a fan of In the Army Now, Terminator 2 and Die Hard: With a Vengeance"
$fm query --rated "In the Army Now (1994)=5" --rated "Terminator 2: Judgment Day (1991)=5" \
          --rated "Die Hard: With a Vengeance (1995)=5" -n 10
