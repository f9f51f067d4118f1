"""Movies per run, 64-bit ids, and who runs a publication.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- `movies` gets `run_id` (part of the primary key, a foreign key to runs): movie metadata is kept
  per run, so that title resolution and movie rows always belong to the live run, before and
  after a rollback. Until now one shared table held the movies of whichever run was written
  last, and every run read it; the existing rows are therefore copied to every recorded run,
  which is exactly what each run read before.
- `movie_id` and `tmdb_id` become BIGINT: ids pass validation as 64-bit integers, and Postgres'
  INTEGER stops at 2^31-1.
- `publications` gets `pid` and `host`: a `running` row whose process is gone was killed mid-way.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COLUMNS = ("movie_id", "title", "year", "genres", "n_ratings", "mean_rating", "imdb_id", "tmdb_id")


def _movies_table(name: str, per_run: bool) -> list:
    columns = [
        sa.Column("movie_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.String(), nullable=False),
        sa.Column("n_ratings", sa.Integer(), nullable=False),
        sa.Column("mean_rating", sa.Double(), nullable=True),
        sa.Column("imdb_id", sa.String(), nullable=True),
        sa.Column("tmdb_id", sa.BigInteger() if per_run else sa.Integer(), nullable=True),
    ]
    if not per_run:
        columns[0] = sa.Column("movie_id", sa.Integer(), autoincrement=False, nullable=False)
        return columns + [sa.PrimaryKeyConstraint("movie_id", name=op.f("pk_movies"))]
    return [
        sa.Column("run_id", sa.String(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_movies_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "movie_id", name=op.f("pk_movies")),
    ]


def _rebuild_movies(per_run: bool, select_sql: str) -> None:
    """Read the rows the new table keeps, drop the old table, create the new one, insert."""
    conn = op.get_bind()
    rows = [dict(r._mapping) for r in conn.execute(sa.text(select_sql))]
    op.drop_table("movies")
    table = op.create_table("movies", *_movies_table("movies", per_run))
    if rows:
        op.bulk_insert(table, rows)


def upgrade() -> None:
    cols = ", ".join(f"m.{c}" for c in _COLUMNS)
    _rebuild_movies(True, f"SELECT r.id AS run_id, {cols} FROM movies m CROSS JOIN runs r")
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("host", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("host")
        batch.drop_column("pid")
    # One row per movie again: the newest run's.
    cols = ", ".join(f"m.{c}" for c in _COLUMNS)
    _rebuild_movies(
        False,
        f"SELECT {cols} FROM movies m JOIN runs r ON r.id = m.run_id "
        "WHERE r.created_at = (SELECT MAX(r2.created_at) FROM movies m2 "
        "JOIN runs r2 ON r2.id = m2.run_id WHERE m2.movie_id = m.movie_id)",
    )
