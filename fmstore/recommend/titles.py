"""Title resolution: what a person typed ("the matrix", "Se7en", "Toy Stroy") -> one movie id.

The normalisation (case, accents, punctuation, articles moved or dropped, alternate titles in
parentheses) and the `TitleIndex` that applies it in stages, never guessing between equals. Pure
Python: the catalog's (movie_id, title, year) rows come in, ids or one-line errors come out. The
errors speak of arguments (`use the movie id`); the CLI says which flag that is.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Iterable

from fmstore.errors import AmbiguousError, ConfigError, NotFoundError
from fmstore.serving import split_year

_PARENS = re.compile(r"\s*\(([^()]*)\)")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.I)
# MovieLens writes "Matrix, The" and "Boot, Das"; these trailing articles move to the front.
_TRAILING_ARTICLE = re.compile(
    r"^(.*),\s*(the|a|an|les|la|le|l'|il|lo|el|los|las|der|die|das|den|det|de|het|een|un|une|uno"
    r"|una|ein|eine|o|os|as|i|gli)$",
    re.I,
)
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+")  # only English ones: "Die Hard" keeps its "Die"
_NON_ALNUM = re.compile(r"[^0-9a-z\n]+")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

# How every error below ends when the title cannot pick one movie; the CLI words it as its flag.
USE_MOVIE_ID = "use the movie id"

Movie = tuple[int, str, int | None]  # (movie_id, title, year), as the catalog lists them


# ---- normalisation ------------------------------------------------------------------------------


def _fold_words(text: str) -> str:
    """Lower case, accents off, '&' as 'and', anything but letters and digits to single spaces.
    Works on many titles joined by newlines at once (newlines are kept)."""
    text = text.replace("&", " and ")
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    return _NON_ALNUM.sub(" ", text.casefold())


def _fold(text: str) -> str:
    """Lower case, accents off, punctuation to single spaces, leading English article off."""
    return _LEADING_ARTICLE.sub("", _fold_words(text.replace("\n", " ")).strip())


def _part_keys(part: str) -> set[str]:
    part = _AKA.sub("", part).strip()
    keys = {_fold(part)}
    m = _TRAILING_ARTICLE.match(part)
    if m:
        keys.add(_fold(m.group(1)))  # "Matrix, The" -> "matrix"
        keys.add(_fold(f"{m.group(2)} {m.group(1)}"))  # "Boot, Das" -> "das boot"
    return keys


def title_keys(title: str) -> set[str]:
    """The normalised forms a title can be asked for by: whole, main title, each alternate title
    in parentheses ("Seven (a.k.a. Se7en)"), each with its trailing article moved or dropped."""
    text, _ = split_year(title)
    keys = {_fold(text)} | _part_keys(_PARENS.sub("", text))
    for alt in _PARENS.findall(text):
        keys |= _part_keys(alt)
    return {k for k in keys if k}


def query_key(text: str) -> tuple[str, int | None]:
    """What the user typed -> (normalised key, year or None)."""
    body, year = split_year(text)
    m = _TRAILING_ARTICLE.match(body)
    if m and m.group(2).lower() in ("the", "a", "an"):
        body = m.group(1)
    return _fold(body), year


def _format_movies(movies: Iterable[Movie], limit: int = 8) -> str:
    """'Title (year) [id N], ...' for messages, the first `limit` movies and a count of the rest."""
    movies = list(movies)
    shown = []
    for movie_id, title, year in movies[:limit]:
        label = title if (year is None or f"({year}" in title) else f"{title} ({year})"
        shown.append(f"{label} [id {movie_id}]")
    more = f", and {len(movies) - limit} more" if len(movies) > limit else ""
    return ", ".join(shown) + more


# ---- the index ----------------------------------------------------------------------------------


class TitleIndex:
    """Resolves what a person typed to one movie id, never guessing between equals.

    Stages, first that finds something wins: the exact title; the same words ignoring case,
    accents, punctuation and articles ("The Matrix" = "Matrix, The (1999)"), with the year if one
    was given, else any year; the typed words as the start of a title ("Terminator 2" ->
    "Terminator 2: Judgment Day (1991)"); then fuzzy (difflib on normalised titles, after a cheap
    length prefilter). Several equally good matches raise AmbiguousError listing them; nothing
    close raises NotFoundError with the closest suggestions.
    """

    FUZZY_CUTOFF = 0.8
    SUGGEST_CUTOFF = 0.55

    def __init__(self, movies: Iterable[Movie]):
        self.movies = [(int(m), str(t), None if y is None else int(y)) for m, t, y in movies]
        self._by_id = {m[0]: m for m in self.movies}
        self._exact: dict[str, list[int]] | None = None
        self._hay: list[str] | None = None  # each title folded to plain words: a cheap prefilter
        self._row_keys: dict[int, set[str]] = {}
        self._all_keys: list[tuple[str, int]] | None = None  # (key, row), for fuzzy

    def resolve(self, text: str) -> int:
        text = (text or "").strip()
        if not text:
            raise ConfigError(
                f'empty movie title: give a title like "Toy Story (1995)" or {USE_MOVIE_ID}'
            )
        exact = self._build_exact().get(text)
        if exact:
            return self._one(text, exact)
        key, year = query_key(text)
        if not key:
            raise ConfigError(f'"{text}" has no letters or digits to look up; {USE_MOVIE_ID}')
        candidates = [r for r in self._candidates(key) if self._year_ok(r, year)]

        # the same words ignoring case, accents, punctuation and articles; year-optional
        rows = [r for r in candidates if key in self._keys_of(r)]
        if rows:
            return self._one(text, rows)

        # the typed words as the start of a title, on a word boundary
        prefix = key + " "
        rows = [r for r in candidates if any(k.startswith(prefix) for k in self._keys_of(r))]
        if rows:
            return self._one(text, rows)

        return self._resolve_fuzzy(text, key, year)

    def describe(self, movie_id: int) -> str:
        """'Title (year) [id N]' of one movie, for messages."""
        movie = self._by_id.get(int(movie_id))
        return _format_movies([movie]) if movie else f"[id {movie_id}]"

    def _resolve_fuzzy(self, text: str, key: str, year: int | None) -> int:
        """The last stage: the best fuzzy match, or NotFoundError with the closest suggestions."""
        scored = self._fuzzy(key, year, self.FUZZY_CUTOFF)
        if scored:
            best = max(scored.values())
            return self._one(text, [r for r, s in scored.items() if s >= best - 1e-9])
        # nothing close enough to pick: suggest, in any year (a wrong year is a common slip)
        scored = self._fuzzy(key, None, self.SUGGEST_CUTOFF)
        if scored:
            closest = sorted(scored, key=lambda r: (-scored[r], self.movies[r][0]))[:3]
            suggestions = _format_movies(self.movies[r] for r in closest)
            raise NotFoundError(f'no movie matches "{text}"; closest: {suggestions}')
        raise NotFoundError(f'no movie matches "{text}"; check the spelling or {USE_MOVIE_ID}')

    def _one(self, text: str, rows: Iterable[int]) -> int:
        rows = sorted(set(rows), key=lambda r: self.movies[r][0])
        if len(rows) == 1:
            return self.movies[rows[0]][0]
        listed = _format_movies(self.movies[r] for r in rows)
        raise AmbiguousError(
            f'"{text}" matches {len(rows)} movies: {listed}; add the year or {USE_MOVIE_ID}'
        )

    def _build_exact(self) -> dict[str, list[int]]:
        if self._exact is None:
            self._exact = {}
            for row, (_, title, _) in enumerate(self.movies):
                self._exact.setdefault(title.strip(), []).append(row)
        return self._exact

    def _candidates(self, key: str) -> list[int]:
        """Rows whose folded title contains every word of `key`: a superset of the titles that
        have `key` as a key or as the start of one (keys are made of the title's own words).
        Folding all titles in one pass costs ~1 us a title; title_keys() costs 6."""
        if self._hay is None:
            joined = "\n".join(t.replace("\n", " ") for _, t, _ in self.movies)
            self._hay = _fold_words(joined).split("\n")
        words = sorted(set(key.split()), key=len, reverse=True)
        return [row for row, h in enumerate(self._hay) if all(w in h for w in words)]

    def _keys_of(self, row: int) -> set[str]:
        keys = self._row_keys.get(row)
        if keys is None:
            keys = self._row_keys[row] = title_keys(self.movies[row][1])
        return keys

    def _build_all_keys(self) -> list[tuple[str, int]]:
        if self._all_keys is None:
            self._all_keys = [
                (k, row) for row in range(len(self.movies)) for k in self._keys_of(row)
            ]
        return self._all_keys

    def _year_ok(self, row: int, year: int | None) -> bool:
        if year is None:
            return True
        movie_year = self.movies[row][2]
        if movie_year is None:
            movie_year = split_year(self.movies[row][1])[1]
        return movie_year == year

    def _fuzzy(self, key: str, year: int | None, cutoff: float) -> dict[int, float]:
        """Best difflib ratio per row, for the rows at or above `cutoff` (in `year`, if given)."""
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)  # the fixed side: SequenceMatcher caches what it knows about seq2
        n = len(key)
        # ratio = 2M / (n + len) <= 2 min(n, len) / (n + len): a length check rules most titles out
        lo, hi = n * cutoff / (2 - cutoff), n * (2 - cutoff) / cutoff
        scored: dict[int, float] = {}
        for k, row in self._build_all_keys():
            if not lo <= len(k) <= hi or not self._year_ok(row, year):
                continue
            matcher.set_seq1(k)
            if matcher.quick_ratio() < cutoff:
                continue
            ratio = matcher.ratio()
            if ratio >= cutoff and ratio > scored.get(row, 0.0):
                scored[row] = ratio
        return scored
