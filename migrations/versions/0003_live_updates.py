"""Live updates: recorded ratings, added movies, and how far each collection has applied them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

- `recorded_ratings`: ratings given after training (`fmstore rate`), append-only, one row per
  change (a re-rating appends; the newest row counts), with when and from where.
- `added_movies`: movies added after training (`fmstore movies add`), append-only.
- `applied_updates`: per physical collection, the newest of those rows its points include.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recorded_ratings",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("movie_id", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.Double(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recorded_ratings")),
    )
    op.create_index(
        op.f("ix_recorded_ratings_user_id_movie_id"),
        "recorded_ratings",
        ["user_id", "movie_id"],
    )
    op.create_table(
        "added_movies",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("movie_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.String(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_added_movies")),
        sa.UniqueConstraint("movie_id", name=op.f("uq_added_movies_movie_id")),
    )
    op.create_table(
        "applied_updates",
        sa.Column("collection", sa.String(), nullable=False),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("collection", name=op.f("pk_applied_updates")),
    )


def downgrade() -> None:
    op.drop_table("applied_updates")
    op.drop_table("added_movies")
    op.drop_index(op.f("ix_recorded_ratings_user_id_movie_id"), table_name="recorded_ratings")
    op.drop_table("recorded_ratings")
