"""Where the toolkit keeps its state (journal, probe results)."""

import os
from pathlib import Path


def state_dir() -> Path:
    """The state directory: $P2V_HOME, else ~/.local/share/p2v. Created on first use."""
    env = os.environ.get("P2V_HOME")
    path = Path(env) if env else Path.home() / ".local" / "share" / "p2v"
    path.mkdir(parents=True, exist_ok=True)
    return path
