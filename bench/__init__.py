"""Benchmarks: p2v against its peers on the same input, one run each."""

from __future__ import annotations

import subprocess


def output(*cmd: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    """The command's output; a failed one ends the benchmark with what it said."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout
