"""Data-parallel training (fmstore/train/distributed.py): 2 processes with gloo on CPU learn what
one process learns, keep identical state, and only rank 0 writes the run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from planted import write_planted

pytestmark = pytest.mark.slow  # trains ml-latest-small in several processes


def _find_ml_small() -> str:
    """The real ml-latest-small in shared/data beside this checkout or any folder above it."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "shared" / "data" / "ml-latest-small"
        if (candidate / "ratings.csv").is_file():
            return str(candidate)
    return ""


ML_SMALL = _find_ml_small()
# the same config for both runs: few epochs keep the test short (the torch engine on CPU)
CONFIG = ("--epochs", "3", "--factors", "32", "--seed", "1")


def _runs(home):
    runs = home / "runs"
    return sorted(p for p in runs.iterdir() if not p.name.startswith(".")) if runs.is_dir() else []


@pytest.mark.skipif(not ML_SMALL, reason="no shared/data/ml-latest-small above this checkout")
def test_two_processes_reach_the_single_process_rmse(tmp_path, fmstore_cli):
    one = fmstore_cli(tmp_path / "one", "train", "--data", ML_SMALL, *CONFIG, "--json", timeout=900)
    assert one.returncode == 0, one.stderr
    two = fmstore_cli(
        tmp_path / "two",
        "train",
        "--data",
        ML_SMALL,
        *CONFIG,
        "--nproc",
        "2",
        "--json",
        timeout=900,
        process=True,  # its processes print to the real stdout, which only a subprocess captures
    )
    assert two.returncode == 0, two.stderr
    single, parallel = json.loads(one.stdout), json.loads(two.stdout)  # rank 0 alone prints
    assert parallel["distributed"] == {"world_size": 2, "backend": "gloo", "ranks_identical": True}
    assert parallel["valid_rmse"] == pytest.approx(single["valid_rmse"], abs=0.005)
    assert parallel["n_train"] == single["n_train"]
    assert [p.name for p in _runs(tmp_path / "two")] == [parallel["run_id"]]  # rank 0 writes


def test_torchrun_starts_the_same_run(tmp_path, fmstore_cli):
    """`torchrun --nproc-per-node 2 -m fmstore train ...` (torch.distributed.run), on planted
    data."""
    data = write_planted(tmp_path / "planted")
    home = tmp_path / "home"
    env = {"FMSTORE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    import subprocess

    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "-m", "fmstore", "train", "--data", str(data), "--epochs", "2", "--factors", "8",
            "--json",
        ],
        capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")} | env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["distributed"]["world_size"] == 2 and summary["distributed"]["ranks_identical"]
    assert len(_runs(home)) == 1


def test_nproc_must_be_positive(tmp_path, fmstore_cli, assert_one_line_error):
    data = write_planted(tmp_path / "planted")
    result = fmstore_cli(tmp_path / "home", "train", "--data", str(data), "--nproc", "0")
    assert_one_line_error(result, "--nproc 0")
