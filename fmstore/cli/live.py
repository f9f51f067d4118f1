"""What is being served: the run behind each alias, the run a rollback would return to, point
counts, and the backends as they may be shown (secrets masked). Read-only: nothing here creates
a store folder or a catalog file that is not there yet."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fmstore.config import Settings, url_secrets
from fmstore.config import mask_secrets as config_mask_secrets

_USER_INFO = re.compile(r"(?<=//)[^/@]*@")
_SECRET_PARAM = re.compile(r"(?i)\b(password|passwd|api[_-]?key|token|secret)=[^&;\s]*")


def mask_url(url: str | None) -> str | None:
    """A URL as it may be printed: user and password removed, secret query values masked."""
    if not url:
        return url
    return _SECRET_PARAM.sub(r"\1=***", _USER_INFO.sub("***@", url))


def mask_secrets(text: str, s: Settings) -> str:
    """`text` with every password, user name and API key of `s` replaced by ***: the one masker
    of config.mask_secrets, given this status page's extra rule that user names are hidden too."""
    from urllib.parse import unquote, urlsplit

    secrets = [s.qdrant_api_key or ""]
    for url in (s.database_url, s.qdrant_url):
        if url and "//" in url:
            secrets += url_secrets(url)
            user = urlsplit(url).username
            secrets += [user, unquote(user)] if user else []
    text = config_mask_secrets(text, secrets)
    return mask_url(text) if "//" in text else text


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
    state = Served()
    if not has_store(s):
        return state
    from fmstore.vectors import open_store

    with open_store(s) as store:
        for alias in (s.movies_collection, s.users_collection):
            state.aliases[alias] = store.resolve_alias(alias)
        if count_points:
            for collection in filter(None, state.aliases.values()):
                state.points[collection] = store.count(collection)
        live = state.aliases[s.movies_collection]
        if live and has_catalog(s):
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
