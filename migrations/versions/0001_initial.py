"""Initial catalog: movies, runs, publications.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "movies",
        sa.Column("movie_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.String(), nullable=False),
        sa.Column("n_ratings", sa.Integer(), nullable=False),
        sa.Column("mean_rating", sa.Double(), nullable=True),
        sa.Column("imdb_id", sa.String(), nullable=True),
        sa.Column("tmdb_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("movie_id", name=op.f("pk_movies")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset_name", sa.String(), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("collection", sa.String(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("backend IN ('edge', 'server')", name=op.f("ck_publications_backend")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'rolled_back')",
            name=op.f("ck_publications_status"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_publications_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
    )
    op.create_index(op.f("ix_publications_alias_status"), "publications", ["alias", "status"])
    op.create_index(op.f("ix_publications_run_id"), "publications", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_publications_run_id"), table_name="publications")
    op.drop_index(op.f("ix_publications_alias_status"), table_name="publications")
    op.drop_table("publications")
    op.drop_table("runs")
    op.drop_table("movies")
