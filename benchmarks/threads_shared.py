"""Threads on a shared machine: an ml-latest-small training (the rating FM, 6 epochs, numba
engine) while another process keeps one core busy, with fmstore's default thread count (the
CPUs this process may use) and with `--threads 1`, alternately, `--rounds` times each. Prints
the median seconds per epoch (epochs after the first, which compiles nothing but warms caches)
and the load average around each run.

    python benchmarks/threads_shared.py [DATA] [--rounds 3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench_data import ML_SMALL  # benchmarks/bench_data.py, beside this file


def train(data: str, threads: str | None) -> list[float]:
    home = tempfile.mkdtemp(prefix="fmstore-threads-")
    args = [sys.executable, "-m", "fmstore", "train", "--data", data, "--no-ranking", "--no-refit"]
    args += ["--epochs", "6", "--patience", "6", "--json"]
    if threads:
        args += ["--threads", threads]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")}
    out = subprocess.run(args, capture_output=True, text=True, env=env | {"FMSTORE_HOME": home})
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout)["epoch_train_seconds"][1:]


def main(argv: list[str]) -> int:
    data = next((a for a in argv if not a.startswith("--")), str(ML_SMALL))
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seconds: dict[str, list[float]] = {"default": [], "1": []}
        loads = []
        for _ in range(rounds):
            for threads in ("default", "1"):
                seconds[threads] += train(data, None if threads == "default" else threads)
                loads.append(os.getloadavg()[0])
    finally:
        busy.kill()
    from fmstore.threads import available_cpus

    print(f"one busy process beside the training; load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| threads | median seconds per epoch | epochs timed |")
    print("| --- | --- | --- |")
    for name, values in seconds.items():
        label = f"default ({available_cpus()})" if name == "default" else name
        print(f"| {label} | {statistics.median(values):.3f} | {len(values)} |")
    ratio = statistics.median(seconds["default"]) / statistics.median(seconds["1"])
    print(f"\ndefault / one thread: {ratio:.2f} (above 1: the default is slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
