"""The former home of run folders, now fmstore.runs: a re-export kept only for callers that
another change owns (tests/conftest.py and fmstore/cli/train.py use `from fmstore import
artifact`). New code imports fmstore.runs; remove this file once those two do."""

from fmstore.runs import *  # noqa: F403
from fmstore.runs import __all__  # noqa: F401
