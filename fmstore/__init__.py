"""fmstore: a Factorization Machine trained on movie ratings, published as an embedding store."""

__version__ = "0.1.0"


# The notebook flow (fmstore.notebook), imported when first asked for: `import fmstore` stays
# cheap for the CLI, which never uses it. (`fmstore.publish(model)` is the publish package,
# which can be called with a model: see fmstore/publish/__init__.py.)
_NOTEBOOK = ("fit", "load", "Model")


def __getattr__(name: str):
    import importlib

    if name in _NOTEBOOK:
        return getattr(importlib.import_module("fmstore.notebook"), name)
    if name == "publish":
        return importlib.import_module("fmstore.publish")
    raise AttributeError(f"module 'fmstore' has no attribute {name!r}")
