"""Layer 2: the agent's code and the live system's own files, as one initramfs part.

Small and quick (a second), so a change to the agent never rebuilds the packages.
"""

from __future__ import annotations

import importlib.util
import py_compile
import shutil
import tempfile
from pathlib import Path

from isobuild.common import BOOT_ISO, REPO, cache_dir, digest, locked, log, pack_cpio

AGENT = REPO / "agent"
ROOTFS = BOOT_ISO / "rootfs"  # copied as is: init, DHCP script
AGENT_HOME = "usr/lib/p2v-agent"  # the agent package lives here on the live system
LAUNCHER = f"""#!/bin/sh
export PYTHONPATH=/{AGENT_HOME}
exec python3 -m agent.cli "$@"
"""
COMPRESS = ("zstd", "-q", "-T0", "-15")


def _sources() -> list[Path]:
    agent = [p for p in AGENT.rglob("*.py") if "__pycache__" not in p.parts]
    rootfs = [p for p in ROOTFS.rglob("*") if p.is_file()]
    return [*agent, *rootfs, Path(__file__)]


def agent_layer() -> Path:
    """The cached agent part for the current sources, built when missing."""
    cache = cache_dir()
    target = cache / f"agent-{digest(_sources())}.img"
    with locked(cache / ".lock"):
        if target.exists():
            return target
        for old in cache.glob("agent-*.img"):
            old.unlink()
        with tempfile.TemporaryDirectory(prefix="agent-", dir=cache) as tmp:
            stage = Path(tmp) / "root"
            _stage(stage)
            partial = Path(tmp) / "agent.img"
            pack_cpio(stage, partial, COMPRESS)
            partial.rename(target)
    log(f"agent layer {target.name}")
    return target


def _stage(stage: Path) -> None:
    shutil.copytree(ROOTFS, stage, symlinks=True)
    home = stage / AGENT_HOME
    for source in AGENT.rglob("*.py"):
        if "__pycache__" in source.parts:
            continue
        dest = home / source.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, dest)
        # Byte-compiled here (same Python 3.11 as the live system): the agent starts
        # seconds sooner under emulation. Checked by hash, not by file time.
        py_compile.compile(
            str(dest),
            cfile=importlib.util.cache_from_source(str(dest)),
            dfile=f"/{dest.relative_to(stage)}",
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            doraise=True,
        )
    launcher = stage / "usr/sbin/p2v-agent"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    (stage / "init").chmod(0o755)
