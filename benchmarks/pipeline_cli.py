"""The whole default pipeline as a user runs it: `fmstore train` (ranking search, both models,
validation, refit, save) then `fmstore publish`, each in its own process under /usr/bin/time
(wall seconds, peak RSS), on 27,753,444 ml-latest-shaped synthetic ratings by default. Each line
the CLI prints on stderr is time-stamped, so the table shows where the time goes.

    python benchmarks/pipeline_cli.py                                  # 27.75M, the issue's flags
    python benchmarks/pipeline_cli.py --data DIR --train-args "--epochs 20"

Phases are read from the progress lines: "ranking search: ..." (each point), "epoch N" (the
rating FM), "ranking sweep i/n" (the ranking model), "measuring the validation split",
"refitting ...", and what follows the last line (saving the run).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FMSTORE = [sys.executable, "-m", "fmstore"]
SYNTH = Path("/tmp/fmstore-bench/synth-27753444-283228-53889")


def run_timed(args: list[str], env: dict) -> tuple[list[tuple[float, str]], float, float, int]:
    """(time-stamped stderr lines, wall seconds, peak RSS GiB, exit code) of one command."""
    cmd = ["/usr/bin/time", "-f", "TIME %e %M", *args]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:
        line = line.rstrip()
        lines.append((time.perf_counter() - started, line))
        print(f"{lines[-1][0]:8.1f}s  {line}", file=sys.stderr, flush=True)
    proc.wait()
    timing = next(text for _, text in lines if text.startswith("TIME "))
    wall, rss = (float(x) for x in timing.split()[1:3])
    return [x for x in lines if not x[1].startswith("TIME ")], wall, rss / 2**20, proc.returncode


PHASES = [
    ("read + validate the data", r"^\S.*: [\d,]+ ratings, [\d,]+ movies"),
    ("ranking model's search", r"^(ranking search|ranking model: reg)"),
    ("rating FM (epochs)", r"^epoch \d+"),
    ("ranking model (sweeps)", r"^(fitting the ranking model|ranking sweep)"),
    ("served metrics on the validation split", r"^measuring the validation split"),
    ("refit (FM epochs + warm ranking sweeps)", r"^refitting"),
]


def phases(lines: list[tuple[float, str]], wall: float) -> list[tuple[str, float]]:
    """Seconds per phase: a phase runs from its first line to the next phase's first line; the
    refit's own epoch and sweep lines count to the refit."""
    marks: list[tuple[float, str]] = [(0.0, "start (imports, settings)")]
    refitting = False
    for t, line in lines:
        for name, pattern in PHASES:
            if re.search(pattern, line):
                refitting = refitting or name.startswith("refit")
                name = "refit (FM epochs + warm ranking sweeps)" if refitting else name
                if marks[-1][1] != name:
                    marks.append((t, name))
                break
    marks.append((wall, "end"))
    totals: dict[str, float] = {}
    for (t0, name), (t1, _) in zip(marks[:-1], marks[1:], strict=True):
        totals[name] = totals.get(name, 0.0) + (t1 - t0)
    return list(totals.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SYNTH)
    parser.add_argument("--train-args", default="--epochs 2 --factors 120")
    args = parser.parse_args()
    if not (args.data / "ratings.csv").exists():
        subprocess.run(
            [*FMSTORE, "data", "synth", str(args.data), "--ratings", "27753444"], check=True
        )
    home = Path(tempfile.mkdtemp(prefix="fmstore-pipeline-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")}
    env |= {"FMSTORE_HOME": str(home), "COLUMNS": "200"}
    load_before = os.getloadavg()[0]
    train = [*FMSTORE, "train", "--data", str(args.data), *shlex.split(args.train_args)]
    t_lines, t_wall, t_rss, t_code = run_timed(train, env)
    p_lines, p_wall, p_rss, p_code = run_timed([*FMSTORE, "publish"], env)
    print(
        f"\n`fmstore train --data DATA {args.train_args}` then `fmstore publish`; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; home {home}\n"
    )
    print("| phase | seconds |")
    print("| --- | --- |")
    for name, seconds in phases(t_lines, t_wall):
        print(f"| train: {name} | {seconds:.0f} |")
    print(f"| **train, total** (exit {t_code}) | **{t_wall:.0f}** (peak RSS {t_rss:.2f} GiB) |")
    print(f"| **publish** (exit {p_code}) | **{p_wall:.0f}** (peak RSS {p_rss:.2f} GiB) |")
    print(f"| **pipeline** | **{t_wall + p_wall:.0f}** |")
    return t_code or p_code


if __name__ == "__main__":
    sys.exit(main())
