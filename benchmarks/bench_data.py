"""The dataset a benchmark reads: the path given first on its command line, else
ml-latest-small in ../shared/data beside the repository (never copied into it)."""

from __future__ import annotations

from pathlib import Path

ML_SMALL = Path(__file__).resolve().parents[2] / "shared/data/ml-latest-small"


def load_from_argv(argv: list[str]):
    """datasets.load_dataset of argv[0] when given, else of ML_SMALL."""
    from fmstore import datasets

    return datasets.load_dataset(argv[0] if argv else str(ML_SMALL))
