"""Alembic environment for the fmstore catalog.

Two ways in:
- fmstore.catalog.upgrade(engine) passes an open connection in config.attributes["connection"];
- the `alembic` command line (alembic.ini at the repository root) builds an engine from
  Settings.from_env().catalog_url, i.e. FMSTORE_DATABASE_URL or the SQLite file in FMSTORE_HOME.
"""

from logging.config import fileConfig

from alembic import context

from fmstore.catalog import Base, UTCDateTime, make_engine, migration_connection
from fmstore.config import Settings

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj, autogen_context):
    # Migrations must not import the models they migrate away from: write the plain type.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = Settings.from_env().catalog_url
    if context.is_offline_mode():  # `alembic upgrade head --sql`: print the SQL
        context.configure(
            url=url.replace("postgresql://", "postgresql+psycopg://", 1),
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = make_engine(url)
        try:
            with migration_connection(engine) as conn:
                run_migrations(conn)
        finally:
            engine.dispose()
