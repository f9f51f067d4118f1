"""Metadata lives in pyproject.toml; this file only ships the top-level migrations/ folder inside
the built package, as fmstore/_migrations (Alembic's scripts must be reachable from an installed
wheel; fmstore.catalog.schema finds them there, or at the top level in a source checkout)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithMigrations(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "fmstore" / "_migrations"
        shutil.rmtree(target, ignore_errors=True)
        source = Path(__file__).resolve().parent / "migrations"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithMigrations})
