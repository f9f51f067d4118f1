"""`fmstore query`'s answers: the rows --json prints and the table a terminal shows, with every
title in one style (serving.display_title: "The Matrix (1999)") and similarities with the
decimals that show their order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from rich.table import Table

from fmstore.cli.app import out, safe

if TYPE_CHECKING:
    from fmstore.cli.query import _Answer
    from fmstore.recommend import Recommender


def shown_title(info: dict[int, dict], movie_id: int) -> str | None:
    """A movie's title as every answer shows it (serving.display_title: "The Matrix (1999)")."""
    from fmstore.serving import display_title

    title = info.get(movie_id, {}).get("title")
    return display_title(title) if title is not None else None


def results_of(rec: Recommender, answer: _Answer, info: dict[int, dict]) -> list[dict]:
    """The ranking as rows: the movie's payload (its title as displayed), its score (for similar
    movies the similarity in [-1, 1], to 6 decimals) and, for users, a predicted rating (clamped
    to the scale; `above_scale` when the model predicts more) and the reasons."""
    results = []
    for rank, (movie_id, score) in enumerate(
        zip(answer.ids.tolist(), answer.scores.tolist(), strict=True)
    ):
        p = info.get(movie_id, {})
        row = {
            "movie_id": movie_id,
            "title": shown_title(info, movie_id),
            "year": p.get("year"),
            "genres": p.get("genres") or [],
            "score": round(score, 6 if answer.similar else 5),
            "predicted_rating": None,
        }
        if "key" in p:  # a run trained on a person's own ids: theirs
            row["key"] = p["key"]
        if answer.b_u is not None:
            fm = float(answer.rating_scores[rank])  # the rating model's, not the ranking score
            row["predicted_rating"] = round(rec.predict_rating(answer.b_u, fm), 3)
            unclamped = rec.predict_rating(answer.b_u, fm, clamp=False)
            row["above_scale"] = unclamped >= rec.rating_range[1] + 0.05
            row["because"] = [
                {"movie_id": j, "title": shown_title(info, j), "contribution": round(c, 5)}
                for j, c in answer.reasons.get(movie_id, [])
            ]
        results.append(row)
    return results


def print_results(heading: str, run_id: str, results: list[dict], for_user: bool) -> None:
    from rich.markup import escape

    out.print(
        f"[bold]{escape(safe(heading))}[/bold]  (run {escape(safe(run_id))})", highlight=False
    )
    if not results:
        out.print("no movies match")
        return
    last = ["rating", "because you liked"] if for_user else ["similarity"]
    table = Table("#", "title", "year", "genres", *last)
    digits = order_digits([r["score"] for r in results])
    for rank, r in enumerate(results, 1):
        shown = r["title"] or ""  # displayed already; the year has its own column
        if r["year"] and shown.endswith(f"({r['year']})"):
            shown = shown[: -len(f"({r['year']})")].rstrip()
        genres = escape(safe("|".join(r["genres"])))
        row = [str(rank), escape(safe(shown)), safe(r["year"] or ""), genres]
        if for_user:
            stars = f"{r['predicted_rating']:.1f}" + ("+" if r["above_scale"] else "")
            because = r["because"][0]["title"] if r["because"] else None
            row += [stars, escape(safe(because)) if because else ""]
        else:
            row.append(f"{r['score']:.{digits}f}")
        table.add_row(*row)
    out.print(table)


def order_digits(scores: Sequence[float], least: int = 3, most: int = 6) -> int:
    """The fewest decimals (least..most) at which scores that differ are shown differently, so a
    reader sees the order the ranking has (0.2467, 0.1853, 0.1812, ... not 0.25, 0.19, 0.18)."""
    scores = list(scores)
    for digits in range(least, most):
        shown = [f"{s:.{digits}f}" for s in scores]
        pairs = range(len(scores) - 1)
        if all(shown[i] != shown[i + 1] for i in pairs if scores[i] != scores[i + 1]):
            return digits
    return most
