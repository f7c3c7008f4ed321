"""`p2v-agent`: the agent's command line (inventory and disk export land here)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="p2v-agent",
        description="Runs on the physical server booted from the agent ISO. "
        "This release has no commands yet: inventory and read-only disk export come next.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--version", action="version", version=f"p2v-agent {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
