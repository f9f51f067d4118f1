"""The 2-D map of the movie vectors publish serves: PCA in NumPy, each movie's main genre, the
titles worth labelling, and the caption that says exactly what the legend and the labels show.
UMAP would separate clusters more, but it is a heavy dependency for one picture and its axes mean
nothing; the first two principal components are exact and cheap."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from fmstore.serving import YEAR_SUFFIX, display_title

MIN_RATINGS = 20  # a movie with fewer ratings sits near the origin (the prior holds it there)
N_LABELS = 12
N_GENRE_COLOURS = 9  # the rest are drawn grey as "other"
OTHER = "other"
LABEL_CHARS = 34  # longer titles lose their year, then are cut with "…"


@dataclass
class EmbeddingMap:
    xy: np.ndarray  # float [n_shown, 2]
    genre: list[str]  # main genre of each shown movie, or OTHER
    genres_shown: list[str]  # the coloured genres, most movies first
    labels: list[tuple[int, str]]  # (row in xy, label: label_text of the title) to write
    explained: tuple[float, float]  # share of variance along each axis
    n_movies: int  # how many movies the map shows
    min_ratings: int = MIN_RATINGS  # the movies shown have at least this many (0: all movies)

    def caption(self, vectors_from: str) -> str:
        """What the map shows, in the legend's and the labels' own terms."""
        which = (
            f"the {self.n_movies:,} movies with at least {self.min_ratings} ratings"
            if self.min_ratings
            else f"all {self.n_movies:,} movies"
        )
        named = f"the {len(self.genres_shown)} most frequent main genres are named in the legend"
        rest = f', the rest drawn grey as "{OTHER}"' if OTHER in self.genre else ""
        return (
            f"{vectors_from[0].upper()}{vectors_from[1:]}, of {which}, projected on their first "
            f"two principal components ({self.explained[0]:.0%} and {self.explained[1]:.0%} of "
            "the variance). Colour: each movie's main genre, the rarest of its genres (Toy "
            f"Story's is Animation); {named}{rest}. Circled and labelled: the {len(self.labels)} "
            "most rated movies."
        )


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The rows of `vectors` projected on their first two principal components, and the share
    of the variance each one explains. Signs are fixed so the map does not flip between runs."""
    x = np.asarray(vectors, np.float64)
    x = x - x.mean(axis=0)
    if x.shape[0] < 2 or x.shape[1] < 2:
        return np.zeros((x.shape[0], 2)), (0.0, 0.0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    components = vt[:2]
    # orient each component so that its largest loading is positive
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    total = float((s**2).sum()) or 1.0
    return x @ components.T, (float(s[0] ** 2 / total), float(s[1] ** 2 / total))


def main_genres(genre_lists: list[list[str]]) -> list[str]:
    """A movie's main genre: its least common genre across the catalog, the one that says the
    most about it (Toy Story is Animation before it is Comedy). No genres: OTHER."""
    frequency = Counter(g for genres in genre_lists for g in genres)
    return [
        min(genres, key=lambda g: (frequency[g], g)) if genres else OTHER for genres in genre_lists
    ]


def label_text(title: str, limit: int = LABEL_CHARS) -> str:
    """A title as a map writes it: display_title's style without the alternate titles in
    parentheses ("The City of Lost Children (1995)"), the year dropped when that makes it fit,
    then cut with "…"."""
    shown = display_title(title)
    match = YEAR_SUFFIX.search(shown)
    body, year = (shown[: match.start()], shown[match.start() :].strip()) if match else (shown, "")
    main = body.split(" (")[0] if not body.startswith("(") else body
    full = f"{main} {year}".strip()
    if len(full) <= limit:
        return full
    return main if len(main) <= limit else main[: limit - 1].rstrip() + "…"


def embedding_map(movie_rows: list[dict], item_vectors: np.ndarray) -> EmbeddingMap:
    """The map of the movies with at least MIN_RATINGS ratings (all movies when fewer than 3
    have), the N_LABELS most rated of them labelled."""
    counts = np.array([r.get("n_ratings") or 0 for r in movie_rows])
    shown, floor = np.flatnonzero(counts >= MIN_RATINGS), MIN_RATINGS
    if len(shown) < 3:
        shown, floor = np.arange(len(movie_rows)), 0
    xy, explained = pca_2d(item_vectors[shown])
    genre = main_genres([list(movie_rows[i].get("genres") or []) for i in shown])
    coloured = [g for g, _ in Counter(g for g in genre if g != OTHER).most_common(N_GENRE_COLOURS)]
    genre = [g if g in coloured else OTHER for g in genre]
    most_rated = np.argsort(-counts[shown], kind="stable")[:N_LABELS]
    labels = [(int(row), label_text(movie_rows[shown[row]]["title"])) for row in most_rated]
    return EmbeddingMap(xy, genre, coloured, labels, explained, len(shown), floor)
