"""What is being served: the run behind each alias, the run a rollback would return to, point
counts, and the backends as they may be shown (secrets masked). Read-only: nothing here creates
a store folder or a catalog file that is not there yet."""

from __future__ import annotations

from dataclasses import dataclass, field

from fmstore.config import Settings, url_secrets, userinfo_span
from fmstore.config import mask_secrets as config_mask_secrets


def mask_url(url: str | None) -> str | None:
    """A URL as it may be printed, whatever its shape: user and password removed (***@),
    secret query values masked."""
    if not url:
        return url
    span = userinfo_span(url)
    if span and not url.startswith("sqlite"):  # a SQLite path may hold an @; no user there
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    return config_mask_secrets(url)


def mask_secrets(text: str, s: Settings) -> str:
    """`text` with every password, user name and API key of `s` replaced by ***: the one masker
    of config.mask_secrets, given this status page's extra rule that user names are hidden too."""
    from urllib.parse import unquote

    secrets = [s.qdrant_api_key or ""]
    for url in (s.database_url, s.qdrant_url):
        span = userinfo_span(url or "")
        if span:  # the whole userinfo, user name too, in any shape of URL
            userinfo = url[span[0] : span[1]]
            user = userinfo.partition(":")[0]
            secrets += url_secrets(url) + [userinfo, unquote(userinfo), user, unquote(user)]
    return config_mask_secrets(text, secrets)


@dataclass
class Served:
    aliases: dict[str, str | None] = field(default_factory=dict)  # alias -> physical collection
    points: dict[str, int] = field(default_factory=dict)  # physical collection -> points
    rollback_target: str | None = None  # the run `fmstore publish --rollback` would switch to
    repaired: list[str] = field(default_factory=list)  # stale publication rows marked just now

    @property
    def live_run(self) -> str | None:
        from fmstore.serving import run_id_of

        collection = next(iter(self.aliases.values()), None)
        return run_id_of(collection) if collection else None


def has_store(s: Settings) -> bool:
    return bool(s.qdrant_url) or s.qdrant_path.is_dir()


def has_catalog(s: Settings) -> bool:
    return bool(s.database_url) or (s.home / "catalog.db").is_file()


def served(s: Settings, *, count_points: bool = False) -> Served:
    """The aliases of `s` and what they point at; empty when nothing was ever published."""
    if not has_store(s):
        return Served()
    from fmstore.vectors import open_store

    with open_store(s) as store:
        return served_by(s, store, count_points=count_points)


def served_by(s: Settings, store, *, count_points: bool = False) -> Served:
    """What `store` (open, and locked by the caller when its answer must hold) serves."""
    state = Served()
    for alias in (s.movies_collection, s.users_collection):
        state.aliases[alias] = store.resolve_alias(alias)
    if count_points:
        for collection in filter(None, state.aliases.values()):
            state.points[collection] = store.count(collection)
    if has_catalog(s):
        # Also with no alias live: a rollback can still bring an earlier publication back.
        state.rollback_target, state.repaired = _rollback_target(s, store)
    return state


def _rollback_target(s: Settings, store) -> tuple[str | None, list[str]]:
    """The run `publish --rollback` would return to (fmstore.publish.rollback_target, the rule
    rollback uses), after marking publications left `running` by killed processes (returned)."""
    from fmstore import catalog
    from fmstore import publish as publishing
    from fmstore.serving import run_id_of

    engine = catalog.make_engine(s.catalog_url)
    aliases = (s.movies_collection, s.users_collection)
    try:
        repaired = publishing.reconcile(store, engine, aliases)
        target = publishing.rollback_target(store, engine, *aliases)
        return (run_id_of(target[0]) if target else None), repaired
    except Exception as exc:  # no schema (or an older one) yet: nothing to say about history
        if type(exc).__module__.startswith("sqlalchemy"):
            return None, []
        raise
    finally:
        engine.dispose()


def resolve_run(s: Settings, run: str | None, store=None):
    """The folder of a run named on the command line: its id, the start of one, "latest" (or
    nothing: the latest run) or "live" (the run the aliases serve; `store`: an open one)."""
    from fmstore import runs
    from fmstore.errors import NotFoundError

    if run == "live":
        live = (served_by(s, store) if store is not None else served(s)).live_run
        if live is None:
            raise NotFoundError("no run is live yet: `fmstore publish` one first")
        run = live
    return runs.resolve_run(s.runs_dir, run)
