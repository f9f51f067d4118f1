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
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from fmstore.errors import AmbiguousError, ConfigError, NotFoundError
from fmstore.serving import TRAILING_ARTICLE as _TRAILING_ARTICLE
from fmstore.serving import display_title, split_year

_PARENS = re.compile(r"\s*\(([^()]*)\)")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.I)
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
    """'Title (year) [id N], ...' for messages (display_title's style), the first `limit` movies
    and a count of the rest."""
    movies = list(movies)
    shown = []
    for movie_id, title, year in movies[:limit]:
        label = title if (year is None or f"({year}" in title) else f"{title} ({year})"
        shown.append(f"{display_title(label)} [id {movie_id}]")
    more = f", and {len(movies) - limit} more" if len(movies) > limit else ""
    return ", ".join(shown) + more


# ---- the result ---------------------------------------------------------------------------------

# How a title was found, best first; `TitleMatch.how` is one of these.
EXACT, SAME_WORDS, START_OF_TITLE, FUZZY = "exact", "same words", "start of title", "fuzzy"
MORE_RATED = "more rated"  # a title starting with the typed words, far more rated than the whole
# How many times more ratings a title starting with the typed words needs to win over the movie
# whose whole title they are, when no year was given ("lord of the rings": the 2001 film, 198
# ratings on ml-latest-small, over the 1978 one, 15).
MUCH_MORE_RATED = 5
# "toy story 1995": a bare four-digit number at the end, read as the year when that finds a movie.
_BARE_YEAR = re.compile(r"^(?P<body>.*\S)\s+(?P<year>\d{4})$")
_YEARS = range(1870, 2101)


@dataclass(frozen=True)
class TitleMatch:
    """What a typed title resolved to, and how sure that is.

    `how` is "exact" (the catalog's title as written), "same words" (ignoring case, accents,
    punctuation and articles; the year if one was given, bare or in parentheses), "start of title"
    (the typed words begin exactly one title) or "fuzzy" (the closest spelling). `others` are the
    movies whose titles start with the same words as a "same words" match, kept when one of them
    is more rated than the match or popularity is unknown: the match is then not `exact`, and
    the note names them. The whole title wins unless, with no year typed, one of those is
    MUCH_MORE_RATED times more rated ("Lord of the rings" is the little-rated 1978 film's whole
    title and the start of the trilogy's): that one is shown (`how` "more rated"), the others
    listed, and the note says to add the year for the whole title's film.
    """

    movie_id: int
    query: str
    title: str
    how: str
    others: tuple[int, ...] = ()
    other_titles: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """True when the typed text names this movie and no other: nothing was guessed."""
        return self.how in (EXACT, SAME_WORDS) and not self.others

    def note(self) -> str | None:
        """One line saying what was guessed ("showing The Terminator (1984) for 'Termnator 2'"),
        or None when the match is exact."""
        if self.exact:
            return None
        shown = f"showing {display_title(self.title)} [id {self.movie_id}] for '{self.query}'"
        if self.how == FUZZY:
            return f"{shown} (the closest spelling)"
        if self.how == START_OF_TITLE:
            return f"{shown} (the only title starting with those words)"
        if self.how == MORE_RATED:
            whole = f"{display_title(self.other_titles[0])} [id {self.others[0]}]"
            rest = [
                f"{display_title(t)} [id {i}]"
                for i, t in zip(self.others[1:3], self.other_titles[1:], strict=False)
            ]
            also = f"; also: {', '.join(rest)}" if rest else ""
            return (
                f"{shown} (far more rated than {whole}, whose whole title that is: add its year "
                f"for it){also}"
            )
        listed = ", ".join(
            f"{display_title(t)} [id {i}]"
            for i, t in zip(self.others[:3], self.other_titles, strict=False)
        )
        more = f" and {len(self.others) - 3} more" if len(self.others) > 3 else ""
        return f"{shown} (its whole title); also starting with those words: {listed}{more}"

    def as_dict(self) -> dict:
        """The match for JSON output (the title as display_title shows it)."""
        return {
            "query": self.query,
            "movie_id": self.movie_id,
            "title": display_title(self.title),
            "how": self.how,
            "exact": self.exact,
            "others": list(self.others),
        }


# ---- the index ----------------------------------------------------------------------------------


class TitleIndex:
    """Resolves what a person typed to one movie id, never guessing between equals.

    Stages, first that finds something wins: the exact title; the same words ignoring case,
    accents, punctuation and articles ("The Matrix" = "Matrix, The (1999)"), with the year if one
    was given (in parentheses or bare: "toy story 1995"), else any year; the typed words as the
    start of a title ("Terminator 2" -> "Terminator 2: Judgment Day (1991)"); then fuzzy (difflib
    on normalised titles and on their first words, after a cheap length prefilter). Several
    equally good matches raise AmbiguousError listing them; nothing close raises NotFoundError with
    the closest suggestions. `match` says which stage found the movie (TitleMatch); `resolve`
    returns only the id.
    """

    FUZZY_CUTOFF = 0.8
    SUGGEST_CUTOFF = 0.55
    # A whole title beats a title's first words at the same fuzzy ratio ("Toy Stroy": Toy Story,
    # not Toy Story 2), but a closer first-words match wins ("Termnator 2": Terminator 2, not The
    # Terminator).
    _PREFIX_PENALTY = 1e-6

    def __init__(
        self,
        movies: Iterable[Movie],
        popularity: Callable[[list[int]], Mapping[int, int]] | None = None,
    ):
        """`movies`: (movie_id, title, year) rows. `popularity`: movie ids -> number of ratings,
        used only to decide whether a whole-title match needs a note (see TitleMatch)."""
        self.popularity = popularity
        self.movies = [(int(m), str(t), None if y is None else int(y)) for m, t, y in movies]
        self._by_id = {m[0]: m for m in self.movies}
        self._exact: dict[str, list[int]] | None = None
        self._hay: list[str] | None = None  # each title folded to plain words: a cheap prefilter
        self._row_keys: dict[int, set[str]] = {}
        self._all_keys: list[tuple[str, list[str], int]] | None = None  # (key, words, row)
        self._forms_by_words: dict[int, dict[str, list[tuple[int, float]]]] = {}

    def resolve(self, text: str) -> int:
        """What a person typed -> one movie id; AmbiguousError / NotFoundError / ConfigError."""
        return self.match(text).movie_id

    def match(self, text: str) -> TitleMatch:
        """What a person typed -> TitleMatch (the id, and how it was found: exact or guessed)."""
        text = (text or "").strip()
        if not text:
            raise ConfigError(
                f'empty movie title: give a title like "Toy Story (1995)" or {USE_MOVIE_ID}'
            )
        exact = self._build_exact().get(text)
        if exact:
            return self._pick(text, EXACT, exact)
        key, year = query_key(text)
        if not key:
            raise ConfigError(f'"{text}" has no letters or digits to look up; {USE_MOVIE_ID}')
        readings = [(key, year)]
        bare = _BARE_YEAR.match(key) if year is None else None
        if bare and int(bare["year"]) in _YEARS:
            readings.insert(0, (bare["body"], int(bare["year"])))  # first: it wins a tie
        # Stage by stage over both readings: a better stage of either wins, and the slow fuzzy
        # stage runs only when nothing else found the title.
        for stage in (SAME_WORDS, START_OF_TITLE, FUZZY):
            for reading_key, reading_year in readings:
                rows, others = self._find(stage, reading_key, reading_year)
                if rows:
                    return self._pick(text, stage, rows, others, reading_year is not None)
        raise self._not_found(text, key)

    def describe(self, movie_id: int) -> str:
        """'Title (year) [id N]' of one movie, for messages."""
        movie = self._by_id.get(int(movie_id))
        return _format_movies([movie]) if movie else f"[id {movie_id}]"

    def _find(self, stage: str, key: str, year: int | None) -> tuple[list[int], list[int]]:
        """(the rows `stage` finds for `key` in `year`, rows that merely start with the same
        words); no rows when the stage finds nothing."""
        if stage == FUZZY:
            scored = self._fuzzy(key, year, self.FUZZY_CUTOFF)
            best = max(scored.values(), default=0.0)
            return [r for r, s in scored.items() if s >= best - 1e-9], []
        candidates = [r for r in self._candidates(key) if self._year_ok(r, year)]
        prefix = key + " "
        starting = [r for r in candidates if any(k.startswith(prefix) for k in self._keys_of(r))]
        if stage == START_OF_TITLE:
            return starting, []
        # the same words ignoring case, accents, punctuation and articles; year-optional
        rows = [r for r in candidates if key in self._keys_of(r)]
        return rows, [r for r in starting if r not in rows]

    def _not_found(self, text: str, key: str) -> NotFoundError:
        """NotFoundError with the closest suggestions, in any year (a wrong year is a common
        slip)."""
        scored = self._fuzzy(key, None, self.SUGGEST_CUTOFF)
        if scored:
            closest = sorted(scored, key=lambda r: (-scored[r], self.movies[r][0]))[:3]
            suggestions = _format_movies(self.movies[r] for r in closest)
            return NotFoundError(f'no movie matches "{text}"; closest: {suggestions}')
        return NotFoundError(f'no movie matches "{text}"; check the spelling or {USE_MOVIE_ID}')

    def _pick(
        self,
        text: str,
        how: str,
        rows: Iterable[int],
        others: Iterable[int] = (),
        year_given: bool = True,
    ) -> TitleMatch:
        rows = sorted(set(rows), key=lambda r: self.movies[r][0])
        if len(rows) > 1:
            listed = _format_movies(self.movies[r] for r in rows)
            raise AmbiguousError(
                f'"{text}" matches {len(rows)} movies: {listed}; add the year or {USE_MOVIE_ID}'
            )
        movie_id, title, _ = self.movies[rows[0]]
        others = sorted(set(others), key=lambda r: self.movies[r][0])
        if others and self._best_known(movie_id, [self.movies[r][0] for r in others]):
            others = []
        if others and not year_given:
            popular = self._far_more_rated(text, rows[0], others)
            if popular is not None:
                return popular
        return TitleMatch(
            movie_id,
            text,
            title,
            how,
            tuple(self.movies[r][0] for r in others),
            tuple(self.movies[r][1] for r in others[:3]),
        )

    def _far_more_rated(self, text: str, row: int, others: list[int]) -> TitleMatch | None:
        """The most rated of `others` when it has MUCH_MORE_RATED times the ratings of the whole
        title's movie (`row`), as a "more rated" match listing that movie first; else None."""
        if self.popularity is None:
            return None
        ids = [self.movies[r][0] for r in others]
        counts = self.popularity([self.movies[row][0], *ids])
        ranked = sorted(others, key=lambda r: (-counts.get(self.movies[r][0], 0), r))
        best = self.movies[ranked[0]]
        if counts.get(best[0], 0) < MUCH_MORE_RATED * max(counts.get(self.movies[row][0], 0), 1):
            return None
        listed = [row, *ranked[1:]]
        return TitleMatch(
            best[0],
            text,
            best[1],
            MORE_RATED,
            tuple(self.movies[r][0] for r in listed),
            tuple(self.movies[r][1] for r in listed[:3]),
        )

    def _best_known(self, movie_id: int, others: list[int]) -> bool:
        """Whether the whole-title match has at least as many ratings as every longer title that
        starts with the same words ("Toy Story" vs its sequels): then it is what a person means
        and no note is needed. Unknown (no popularity) counts as no."""
        if self.popularity is None:
            return False
        counts = self.popularity([movie_id, *others])
        mine = counts.get(movie_id, 0)
        return all(mine >= counts.get(o, 0) for o in others)

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

    def _build_all_keys(self) -> list[tuple[str, list[str], int]]:
        if self._all_keys is None:
            self._all_keys = [
                (k, k.split(), row) for row in range(len(self.movies)) for k in self._keys_of(row)
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
        """Best difflib ratio per row, for the rows at or above `cutoff` (in `year`, if given).
        Each title key is compared whole and, when it has more words than `key`, by its first
        words too (a little below a whole-title match of the same ratio)."""
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)  # the fixed side: SequenceMatcher caches what it knows about seq2
        n = len(key)
        # ratio = 2M / (n + len) <= 2 min(n, len) / (n + len): a length check rules most titles out
        lo, hi = n * cutoff / (2 - cutoff), n * (2 - cutoff) / cutoff
        scored: dict[int, float] = {}
        for form, rows in self._forms(len(key.split())).items():
            if not lo <= len(form) <= hi:
                continue
            matcher.set_seq1(form)
            if matcher.quick_ratio() < cutoff:
                continue
            ratio = matcher.ratio()
            for row, penalty in rows:
                score = ratio - penalty
                if score >= cutoff and score > scored.get(row, 0.0) and self._year_ok(row, year):
                    scored[row] = score
        return scored

    def _forms(self, n_words: int) -> dict[str, list[tuple[int, float]]]:
        """Every distinct string fuzzy matching compares with a query of `n_words` words: the
        title keys whole (penalty 0) and the first `n_words` words of longer keys (the prefix
        penalty), each with the rows it stands for. Built once per word count."""
        forms = self._forms_by_words.get(n_words)
        if forms is None:
            forms = {}
            for k, words, row in self._build_all_keys():
                forms.setdefault(k, []).append((row, 0.0))
                if len(words) > n_words:
                    first = " ".join(words[:n_words])
                    forms.setdefault(first, []).append((row, self._PREFIX_PENALTY))
            self._forms_by_words[n_words] = forms
        return forms
