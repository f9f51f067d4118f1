"""Do side features pay? ml-latest-small with a movie column made from its tags.csv.

    python benchmarks/side_features.py [DATASET_FOLDER]   # default: ../shared/data/ml-latest-small

The column: each movie's user tags (tags.csv, lower-cased, tags given to at least 2 movies) as a
multi-valued side column `tags:multi` (1,343 of 9,742 movies have one; 542 tags), written under
a temporary folder, never into the dataset; and a user column: the year of each user's first
rating (`since:num`, from ratings.csv). Two experiments, the same seeds, with and without them:

- warm: the default rating model (`fmstore train`'s FM, the ranking model off: side columns do not
  change it) on the seed-0 90/10 split: valid RMSE;
- cold movies: 10% of the movies held out of training entirely (fmstore's run_cold_start, seed 0,
  no users held out): RMSE of their ratings, each movie served from its features alone (genre and
  year, plus its tags with the column), against w0 + b_u.

A user column trains on the numba engine too (its values, shared by many users, are gathered
over each batch and updated once per step, as genres are), so its seconds compare with the
others' (they differ by the epochs early stopping takes, and by the load).

It prints one table; nothing is asserted.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from fmstore import datasets
from fmstore.config import TrainConfig
from fmstore.evaluate.cold_start import run_cold_start
from fmstore.train import train


def tags_column(folder: Path, out: Path) -> Path:
    """movies.csv plus a `tags` column ('a|b'), written to `out`."""
    tags = pd.read_csv(folder / "tags.csv")
    tags["tag"] = tags.tag.astype(str).str.strip().str.lower()
    tags = tags.drop_duplicates(["movieId", "tag"])
    counts = tags.tag.value_counts()
    tags = tags[tags.tag.isin(counts[counts >= 2].index)]
    joined = tags.groupby("movieId").tag.agg(lambda s: "|".join(sorted(s)))
    movies = pd.read_csv(folder / "movies.csv")
    movies["tags"] = movies.movieId.map(joined).fillna("")
    movies.to_csv(out, index=False)
    return out


def since_column(folder: Path, out: Path) -> Path:
    """users.csv: userId and the year of the user's first rating."""
    ratings = pd.read_csv(folder / "ratings.csv")
    first = pd.to_datetime(ratings.groupby("userId").timestamp.min(), unit="s").dt.year
    first.rename("since").reset_index().to_csv(out, index=False)
    return out


def main(folder: Path) -> None:
    config = TrainConfig(ranking=False)
    with tempfile.TemporaryDirectory() as tmp:
        movies = tags_column(folder, Path(tmp) / "movies-tags.csv")
        read_as = {"movies": str(movies), "movie_features": "tags:multi"}
        users = since_column(folder, Path(tmp) / "users.csv")
        with_users = {"users": str(users), "user_features": "since:num"}
        rows = []
        for name, extra in (
            ("genre + year", None),
            ("genre + year + tags", read_as),
            ("genre + year, user: since:num", with_users),
        ):
            data = datasets.load_dataset(folder, read_as=extra)
            start = time.perf_counter()
            warm = train(data, config).metrics["valid_rmse"]
            seconds = time.perf_counter() - start
            cold = run_cold_start(data, dataclasses.replace(config), user_fraction=0.0)
            # (cold start trains on a Dataset without the users table: the user column's row
            # measures the warm split only)
            by = {r["method"]: r for r in cold.movies}
            model = by["model (genre + year)"]  # (the label of the served model, whatever fields)
            base = by["model w0 + b_u (no movie features)"]
            rows.append((name, warm, seconds, model["rmse"], base["rmse"], model["ratings"]))
    print(
        "| movie fields | valid RMSE (warm) | train s | cold-movie RMSE | w0 + b_u | cold ratings |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, warm, seconds, cold, base, n in rows:
        print(f"| {name} | {warm:.4f} | {seconds:.1f} | {cold:.4f} | {base:.4f} | {n:,} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ml-latest-small"))
