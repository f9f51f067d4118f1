"""The 2-D map of the movie embeddings: PCA in NumPy, each movie's main genre, the titles worth
labelling. UMAP would separate clusters more, but it is a heavy dependency for one picture and
its axes mean nothing; the first two principal components are exact and cheap."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

MIN_RATINGS = 20  # a movie with fewer ratings sits near the origin (the prior holds it there)
N_LABELS = 12
N_GENRE_COLOURS = 9  # the rest are drawn grey as "other"
OTHER = "other"


@dataclass
class EmbeddingMap:
    xy: np.ndarray  # float [n_shown, 2]
    genre: list[str]  # main genre of each shown movie, or OTHER
    genres_shown: list[str]  # the coloured genres, most movies first
    labels: list[tuple[int, str]]  # (row in xy, title) of the labelled movies
    explained: tuple[float, float]  # share of variance along each axis
    n_movies: int  # how many movies the map shows


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


def embedding_map(movie_rows: list[dict], item_vectors: np.ndarray) -> EmbeddingMap:
    """The map of the movies with at least MIN_RATINGS ratings (all movies when none has), the
    N_LABELS most rated of them labelled."""
    counts = np.array([r.get("n_ratings") or 0 for r in movie_rows])
    shown = np.flatnonzero(counts >= MIN_RATINGS)
    if len(shown) < 3:
        shown = np.arange(len(movie_rows))
    xy, explained = pca_2d(item_vectors[shown])
    genre = main_genres([list(movie_rows[i].get("genres") or []) for i in shown])
    coloured = [g for g, _ in Counter(g for g in genre if g != OTHER).most_common(N_GENRE_COLOURS)]
    genre = [g if g in coloured else OTHER for g in genre]
    most_rated = np.argsort(-counts[shown], kind="stable")[:N_LABELS]
    labels = [(int(row), movie_rows[shown[row]]["title"]) for row in most_rated]
    return EmbeddingMap(xy, genre, coloured, labels, explained, len(shown))
