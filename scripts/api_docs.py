"""Write docs/api.md, the API reference, from the docstrings of fmstore's public modules.

    python scripts/api_docs.py           # rewrite docs/api.md
    python scripts/api_docs.py --check   # exit 1 if docs/api.md is not what this would write

Only the standard library's `inspect`: no doc tool to install. A module's public names are its
`__all__`, or else the classes and functions it defines without a leading underscore; a class's
public names are its methods and properties defined in fmstore (inherited ones included, so a
mixin's methods appear on the class that users hold). Constants and type aliases are listed with
their values: they cannot carry docstrings. tests/test_api.py checks that every documented name
has a docstring and that docs/api.md is current.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
REGENERATE = "python scripts/api_docs.py"

# The public API, in the order the page presents it.
MODULES = (
    "fmstore.notebook",
    "fmstore.pipeline",
    "fmstore.ranking_search",
    "fmstore.threads",
    "fmstore.recommend",
    "fmstore.vectors",
    "fmstore.catalog",
    "fmstore.datasets",
    "fmstore.features",
    "fmstore.model",
    "fmstore.train",
    "fmstore.runs",
    "fmstore.evaluate",
    "fmstore.report",
    "fmstore.publish",
    "fmstore.serving",
    "fmstore.config",
    "fmstore.errors",
)


@dataclasses.dataclass
class Entry:
    """One documented name: where it lives, what it is and its docstring ('' when missing)."""

    qualname: str  # "fmstore.recommend.Recommender.recommend"
    kind: str  # "class" | "function" | "method" | "property" | "data"
    signature: str
    doc: str
    home: str  # the module that defines it (for names re-exported elsewhere)

    @property
    def needs_doc(self) -> bool:
        """Whether this kind of name can and must carry a docstring."""
        return self.kind != "data"


def public_names(module: Any) -> list[str]:
    """`__all__`, or the public classes and functions the module defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


def own_doc(obj: Any) -> str:
    """The object's own docstring, cleaned; '' for none or for the one dataclasses and
    namedtuples make up from the signature."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    doc = inspect.cleandoc(doc)
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(") and "\n" not in doc:
        return ""  # generated: "QueryFilter(genres: tuple[str, ...] = (), ...)"
    return doc


class _Text:
    """An annotation written as text (PEP 563), shown without quotes."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature(obj: Any) -> str:
    """`(a: int, b=1) -> int`, annotations as written, with machine-specific text hidden (the page
    must be the same on every checkout)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""

    def plain(annotation: Any) -> Any:
        return _Text(annotation) if isinstance(annotation, str) else annotation

    sig = sig.replace(
        parameters=[p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()],
        return_annotation=plain(sig.return_annotation),
    )
    return _stable(str(sig))


def _stable(text: str) -> str:
    """Object addresses and this checkout's path out of a repr."""
    return re.sub(r" at 0x[0-9a-f]+", "", text).replace(str(ROOT), "<repo>")


def entries() -> Iterator[Entry]:
    """Every public name of MODULES, module by module, each class followed by its members."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        doc = inspect.cleandoc(module.__doc__ or "")
        yield Entry(module_name, "module", "", doc, module_name)
        for name in public_names(module):
            obj = getattr(module, name)
            qualname = f"{module_name}.{name}"
            home = getattr(obj, "__module__", module_name) or module_name
            if inspect.isclass(obj):
                yield Entry(qualname, "class", signature(obj), own_doc(obj), home)
                yield from _members(obj, qualname)
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                yield Entry(qualname, "function", signature(obj), own_doc(obj), home)
            else:
                yield Entry(qualname, "data", f" = {_short_repr(obj)}", "", module_name)


def _members(cls: type, qualname: str) -> Iterator[Entry]:
    """Public methods and properties of `cls` defined in fmstore classes (its own or a base's).
    An override without a docstring of its own has its base's (what inspect.getdoc does): it
    keeps the contract the base describes."""
    seen = set()
    for klass in cls.__mro__:
        if not getattr(klass, "__module__", "").startswith("fmstore"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            member_name = f"{qualname}.{name}"
            if isinstance(member, property):
                doc = inspect.getdoc(getattr(cls, name)) or ""
                yield Entry(member_name, "property", "", doc, cls.__module__)
                continue
            func = getattr(member, "__func__", member)
            if inspect.isfunction(func):
                doc = inspect.getdoc(getattr(cls, name)) or ""
                shown = re.sub(r"^\((self|cls)(: [^,)]*)?(, )?", "(", signature(func))
                yield Entry(member_name, "method", shown, doc, cls.__module__)


def _short_repr(obj: Any) -> str:
    text = _stable(repr(obj))
    return text if len(text) <= 100 else text[:97] + "..."


def render() -> str:
    """The whole page, as this script writes it."""
    lines = [
        "# API reference",
        "",
        f"Generated from the docstrings by `{REGENERATE}`; do not edit by hand",
        "(tests/test_api.py fails when this page and the docstrings disagree).",
        "",
        "Modules: " + ", ".join(f"[`{m}`](#{m.replace('.', '')})" for m in MODULES) + ".",
        "",
    ]
    for e in entries():
        short = e.qualname.rsplit(".", 1)[-1]
        if e.kind == "module":
            lines += [f"## {e.qualname}", "", e.doc, ""]
        elif e.kind == "data":
            lines += [f"- `{short}{e.signature}`", ""]
        else:
            name = e.qualname.split(".", 2)[-1] if e.kind in ("method", "property") else short
            heading = "###" if e.kind in ("class", "function") else "####"
            label = f"{e.kind} " if e.kind in ("class", "property") else ""
            lines += [f"{heading} {label}`{name}{e.signature}`", ""]
            lines += [e.doc or "(undocumented)", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with --check say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is current")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
