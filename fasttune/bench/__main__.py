"""`python -m fasttune.bench [options]`: the same as `fasttune bench` (the options are BenchConfig's fields)."""

from __future__ import annotations

import sys

from fasttune import cli


def main() -> None:
    """The `fasttune-bench` console script."""
    cli.main(["bench", *sys.argv[1:]])


if __name__ == "__main__":
    main()
