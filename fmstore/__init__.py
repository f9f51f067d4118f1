"""fmstore: a Factorization Machine trained on movie ratings, published as an embedding store."""

__version__ = "0.1.0"
