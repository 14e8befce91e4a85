"""`python -m fasttune <command>`: the same as the `fasttune` console script (fasttune/cli.py)."""

from fasttune.cli import main

main()
