"""Where the live agent's secret comes from, most private first.

1. the job medium (`make job-iso`): a separate initramfs part puts it in /etc/p2v;
2. QEMU's fw_cfg (`-fw_cfg name=opt/p2v/secret,file=F`), for converting VMs and tests;
3. `p2v.secret=` on the kernel command line, which every process can read and the
   boot log may print: for a secret made for this one job only;
4. otherwise a new random secret, shown on this machine's consoles only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.protocol import SecretError, generate_secret, normalize_secret, read_secret_file

JOB_SECRET = Path("/etc/p2v/secret")
FW_CFG_SECRET = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/p2v/secret/raw")


@dataclass(frozen=True)
class Secret:
    key: str  # normalized hex
    source: str  # said on the screen
    generated: bool


def find_secret(
    cmdline_secret: str | None, job: Path = JOB_SECRET, fw_cfg: Path = FW_CFG_SECRET
) -> Secret:
    """The secret to serve with; SecretError when a given one is unusable (never guess)."""
    for path, source in ((job, "from the job medium"), (fw_cfg, "from QEMU fw_cfg")):
        if path.exists():
            try:
                return Secret(read_secret_file(path), source, generated=False)
            except SecretError as e:
                raise SecretError(f"the secret {source} is unusable: {e}") from None
    if cmdline_secret:
        return Secret(cmdline_secret, "from the kernel command line (one job only)", False)
    return Secret(normalize_secret(generate_secret()), "made at boot", generated=True)
