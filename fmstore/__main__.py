"""`python -m fmstore` = the `fmstore` command."""

from fmstore.cli import main

main()
