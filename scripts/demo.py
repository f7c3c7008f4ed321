"""`make demo`: the toolkit's main job, end to end, on the built-in sample server.

The sample server (Debian 12 on one SATA disk, BIOS, an e1000 NIC) boots from the
agent ISO in QEMU as a stand-in physical machine, with its secret given through
QEMU's firmware config as an unattended job would. The conversion host then runs
`p2v convert --agent ... --target kvm --verify-boot`, which defines the new guest in
libvirt and boots it on virtio. The sample server's image is never written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.protocol import generate_secret  # noqa: E402
from tests.fixtures import builder, standin  # noqa: E402
from tests.fixtures.standin import Drive, Hardware  # noqa: E402


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iso", type=Path, default=REPO / "build" / "p2v-agent.iso")
    parser.add_argument("--connect", default="qemu:///session", help="libvirt URI")
    args = parser.parse_args()
    started = time.monotonic()

    say("1/3 the sample server's disk (built once, then cached)")
    image = builder.build("bios-ext4")
    say(f"    {image}")
    hardware = Hardware(
        sockets=2,
        memory_mib=1536,
        product="p2v sample server",
        drives=(Drive(image, "sata", "P2V-SAMPLE-0"),),
    )
    with tempfile.TemporaryDirectory(prefix="p2v-demo-") as tmp:
        work = Path(tmp)  # private (0700): the secret lives here
        secret = generate_secret()
        secret_file = work / "secret"
        secret_file.write_text(secret + "\n")
        os.chmod(secret_file, 0o600)
        say(f"2/3 booting it from {args.iso.name} as a stand-in physical server (QEMU)")
        boot_start = time.monotonic()
        with standin.booted(hardware, args.iso, "bios-cd", work, secret) as running:
            say(f"    the agent is ready after {time.monotonic() - boot_start:.0f} s:")
            for line in _agent_screen(running.console()):
                say(f"    | {line}")
            say("3/3 converting it: p2v convert --agent ... --target kvm --verify-boot")
            convert = [
                str(REPO / ".venv" / "bin" / "p2v"), "convert",
                "--agent", f"127.0.0.1:{running.port}", "--secret-file", str(secret_file),
                "--target", "kvm", "--connect", args.connect, "--verify-boot", "--overwrite",
            ]  # fmt: skip
            code = subprocess.run(convert).returncode
    if code != 0:
        say(f"the conversion failed (exit {code}); `p2v history` shows its steps")
        return code
    say(f"done in {time.monotonic() - started:.0f} s; the guest is defined in {args.connect}")
    say("    (virsh -c " + args.connect + " start p2v-bios-ext4, then virsh console)")
    return 0


def _agent_screen(console: str) -> list[str]:
    """The agent's last screen on its console, as the operator sees it (the secret,
    given here, is never on it)."""
    lines = [line.rstrip() for line in console.splitlines()]
    ready = max(i for i, line in enumerate(lines) if standin.READY_LINE in line)
    end = next((i for i in range(ready, len(lines)) if lines[i].startswith("====")), len(lines))
    return lines[ready:end]


if __name__ == "__main__":
    sys.exit(main())
