"""The series a fan means: 70 film series in ml-latest-small, each listed by hand as a title
pattern and checked against the catalogue (`python benchmarks/series.py --list` prints every
member), used as an objective proxy for "movies like X".

A series' movies share characters, makers and audience: asked for movies like one of them, a fan
expects the others near the top. Series Recall@10 of a movie = members of its series in its top
10 / min(10, other members); the mean is over every member with at least MIN_RATINGS ratings.
"""

from __future__ import annotations

import re
import sys

import numpy as np

# name -> a regular expression on MovieLens titles (re.search), written and checked by hand:
# anchored so that "Alien Nation", "Son of Rambow" or "Scream Blacula Scream" stay out.
SERIES: dict[str, str] = {
    "Toy Story": r"^Toy Story",
    "Harry Potter": r"^Harry Potter",
    "Star Wars (episodes)": r"^Star Wars: Episode",
    "The Lord of the Rings": r"^Lord of the Rings: The",
    "The Hobbit": r"^(The )?Hobbit",
    "Shrek": r"^Shrek( 2| the Third| Forever After)? \(",
    "Pirates of the Caribbean": r"^Pirates of the Caribbean",
    "The Matrix": r"^Matrix",
    "Terminator": r"^Terminator",
    "Die Hard": r"Die Hard",
    "Alien": r"^(Alien \(1979|Aliens \(1986|Alien³|Alien: Resurrection)",
    "Jurassic Park": r"Jurassic (Park|World)",
    "Indiana Jones": r"^(Indiana Jones|Raiders of the Lost Ark)",
    "Back to the Future": r"^Back to the Future",
    "The Godfather": r"^Godfather",
    "Rocky": r"^Rocky( II| III| IV| V| Balboa)? \(",
    "Rambo": r"^(Rambo|First Blood)",
    "Lethal Weapon": r"^Lethal Weapon",
    "Mission: Impossible": r"^Mission: Impossible",
    "X-Men": r"^(X-Men|X2: X-Men)",
    "Spider-Man": r"^(The )?(Amazing )?Spider-Man",
    "The Hunger Games": r"Hunger Games",
    "Twilight Saga": r"^(Twilight \(2008|Twilight Saga)",
    "Mad Max": r"Mad Max",
    "Ice Age": r"^Ice Age",
    "Madagascar": r"^(Madagascar|Penguins of Madagascar)",
    "Kung Fu Panda": r"^Kung Fu Panda( \d)? \(",
    "The Hangover": r"^Hangover",
    "Home Alone": r"^Home Alone",
    "Men in Black": r"^Men in Black",
    "Austin Powers": r"^Austin Powers",
    "Scream": r"^Scream( \d)? \(",
    "Saw": r"^Saw( [IVX]+)? \(",
    "A Nightmare on Elm Street": r"^Nightmare on Elm Street",
    "Friday the 13th": r"^Friday the 13th",
    "Bourne": r"^(Bourne (Identity, The \(2002|Supremacy|Ultimatum|Legacy)|Jason Bourne)",
    "Ocean's": r"^Ocean's (Eleven \(2001|Twelve|Thirteen)",
    "The Fast and the Furious": r"(Fast and the Furious|Fast & Furious|^Fast Five|^Furious 7)",
    "Transformers": r"^Transformers(: (Revenge|Dark|Age)| \(2007)",
    "Planet of the Apes": r"Planet of the Apes",
    "Star Trek": r"^Star Trek",
    "Rush Hour": r"^Rush Hour",
    "Scary Movie": r"^Scary Movie",
    "The Naked Gun": r"^Naked Gun",
    "Police Academy": r"^Police Academy",
    "The Karate Kid (1984-94)": r"^(Next )?Karate Kid(, Part|, The \(1984)",
    "Night at the Museum": r"^Night at the Museum",
    "The Chronicles of Narnia": r"^Chronicles of Narnia",
    "Resident Evil": r"^Resident Evil",
    "Underworld": r"^Underworld(: | \(2003)",
    "Final Destination": r"^Final Destination( \d)? \(",
    "Paranormal Activity": r"^Paranormal Activity",
    "Despicable Me": r"^Despicable Me",
    "Cars": r"^Cars( \d)? \(",
    "How to Train Your Dragon": r"^How to Train Your Dragon",
    "Blade": r"^Blade( II|: Trinity)? \(",
    "Hellboy": r"^Hellboy( II: | \()",
    "Predator": r"^Predators? ?(2 )?\(",
    "American Pie (1-4)": r"^(American Pie( 2)? \(|American Wedding|American Reunion)",
    "Ghostbusters (1984-89)": r"^Ghostbusters( II \(| \(a\.k\.a)",
    "Beverly Hills Cop": r"^Beverly Hills Cop",
    "Crocodile Dundee": r"^Crocodile Dundee",
    "RoboCop (1987-93)": r"^RoboCop( \d)? \((19)",
    "Jaws": r"^Jaws",
    "Iron Man": r"^Iron Man( \d)? \(20",
    "Captain America (MCU)": r"^Captain America: ",
    "The Dark Knight trilogy": r"^(Batman Begins|Dark Knight)",
    "Kill Bill": r"^Kill Bill",
    "Wallace & Gromit": r"^Wallace & Gromit",
    "Three Colors": r"^Three Colors",
    "The Mighty Ducks": r"Mighty Ducks",
    "Look Who's Talking": r"^Look Who's Talking",
    "Taken": r"^Taken( \d)? \(20",
    "The Expendables": r"Expendables",
}
MIN_RATINGS = 5  # a query movie needs this many ratings to be asked about


def members(titles: list[str]) -> dict[str, list[int]]:
    """Series name -> rows of `titles` in it (series with at least two present)."""
    found = {}
    for name, pattern in SERIES.items():
        rows = [r for r, title in enumerate(titles) if re.search(pattern, title)]
        if len(rows) >= 2:
            found[name] = rows
    return found


def series_scores(
    neighbours_of, titles: list[str], genres: list[set], counts: np.ndarray, k: int = 10
) -> dict:
    """Mean series Recall@k and mean genre overlap (Jaccard of genres) of the top k, over every
    series member with MIN_RATINGS ratings; `neighbours_of(row)` -> rows, best first."""
    recalls, overlaps, series_used = [], [], 0
    for rows in members(titles).values():
        asked = [r for r in rows if counts[r] >= MIN_RATINGS]
        series_used += bool(asked)
        for row in asked:
            top = [j for j in neighbours_of(row) if j != row][:k]
            others = set(rows) - {row}
            recalls.append(len(others & set(top)) / min(k, len(others)))
            overlaps.append(np.mean([_jaccard(genres[row], genres[j]) for j in top]))
    return {
        "series": series_used,
        "queries": len(recalls),
        "series_recall@10": float(np.mean(recalls)),
        "genre_overlap": float(np.mean(overlaps)),
    }


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def main() -> int:
    from fmstore import datasets

    data = datasets.load_dataset(
        sys.argv[2] if len(sys.argv) > 2 else "../shared/data/ml-latest-small"
    )
    titles = [str(t) for t in data.movies.title]
    for name, rows in members(titles).items():
        print(f"{name}: " + " | ".join(titles[r] for r in rows))
    print(f"{len(members(titles))} series")
    return 0


if __name__ == "__main__" and "--list" in sys.argv:
    sys.exit(main())
