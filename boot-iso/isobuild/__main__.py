"""`python -m isobuild iso|job-iso`: see boot-iso/README.md."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from isobuild.common import BuildError
from isobuild.image import build_iso, build_job_iso


def main() -> int:
    parser = argparse.ArgumentParser(prog="isobuild", description="Build the p2v agent ISO.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("iso", help="the agent ISO (layers cached by recipe hash)")
    p.add_argument("--output", type=Path, required=True)
    p = verbs.add_parser("job-iso", help="a copy of the ISO that carries a job's secret")
    p.add_argument("--base", type=Path, required=True, help="the agent ISO")
    p.add_argument("--secret-file", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    start = time.monotonic()
    try:
        if args.verb == "iso":
            build_iso(args.output)
        else:
            build_job_iso(args.base, args.secret_file, args.output)
    except (BuildError, OSError) as e:
        print(f"isobuild: {e}", file=sys.stderr)
        return 1
    print(f"isobuild: done in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
