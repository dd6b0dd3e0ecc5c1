"""The `titan` console script: the CLI, or one line and exit 3 when the execution core cannot be
loaded (a compiled core out of date with its sources refuses to load, `domain.StaleCoreError`,
before any command could catch it)."""

from __future__ import annotations

import sys

EXIT_UNREACHABLE = 3


def main() -> None:
    """Console-script entry point."""
    try:
        from infra.cli import main as cli_main
    except ImportError as exc:
        first = str(exc).strip().splitlines()
        sys.stderr.write("error: " + " ".join(line.strip() for line in first) + "\n")
        sys.exit(EXIT_UNREACHABLE)
    cli_main()


if __name__ == "__main__":
    main()
