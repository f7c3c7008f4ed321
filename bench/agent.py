"""Benchmark: what authentication and encryption cost when reading a server's disk.

A 4 GiB loop device holding 1 GiB of data (the image of bench.transfer) is copied,
in one run, through `p2v-agent serve` on loopback (`p2v copy agent://...`: TLS-PSK,
checked digest) and by `nbdcopy` from an unauthenticated `qemu-nbd` export of the
same device. Both read the whole device (a block device reports no holes) and write
a sparse raw file that is flushed. A third row, `nbdcopy` through the agent's own
TLS export, shows what the encryption costs a C client on this machine: client,
agent and both TLS ends share its cores. The CPU the whole machine spends on each
copy is measured too: it bounds what any client can reach here. The loop device
reads its file with direct I/O, as a disk would be read: a buffered loop device
copies every byte once more in a kernel thread that takes a core from the tools.

    python -m bench.agent [--dir DIR] [--runs N]

Target: our throughput at least 0.8x of the plain export's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from agent.protocol import PSK_IDENTITY, normalize_secret, write_psk_file
from bench.transfer import P2V, drop_caches, make_source, run_measured

AGENT_PORT, PLAIN_PORT = 18543, 18544


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/p2v-bench"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.agent needs root: it attaches a loop device")
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "P2V_HOME": str(work / "home")}
    raw, out = work / "source.raw", work / "out.raw"
    if not raw.exists():
        print(f"making {raw} (4 GiB, 1 GiB of data) ...", flush=True)
        make_source(raw)
    key = work / "agent.secret"
    key.write_text(secrets.token_hex(16) + "\n")
    key.chmod(0o600)
    device = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", "--direct-io=on", str(raw)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    name = os.path.basename(device)
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--listen", f"127.0.0.1:{AGENT_PORT}",
         "--secret-file", str(key), "--disk", name],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    plain = subprocess.Popen(
        ["qemu-nbd", "-r", "-f", "raw", "--shared=8", "-t", "-b", "127.0.0.1",
         "-p", str(PLAIN_PORT), "-x", name, device]
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        while "secret fingerprint" not in (line := agent.stdout.readline()):
            if not line:
                raise SystemExit("p2v-agent serve did not start")
        time.sleep(1)  # qemu-nbd listens within a moment
        expected = _digest(device, env)
        psk = write_psk_file(work, normalize_secret(key.read_text()))
        tls_uri = f"nbds://{PSK_IDENTITY}@127.0.0.1:{AGENT_PORT}/{name}?tls-psk-file={psk}"
        commands = {
            "p2v copy agent://": [*P2V, "copy", f"agent://127.0.0.1:{AGENT_PORT}/{name}",
                                  str(out), "--secret-file", str(key)],
            "nbdcopy agent TLS": ["nbdcopy", "--flush", tls_uri, str(out)],
            "nbdcopy plain NBD": ["nbdcopy", "--flush",
                                  f"nbd://127.0.0.1:{PLAIN_PORT}/{name}", str(out)],
        }  # fmt: skip
        walls: dict[str, list[float]] = {n: [] for n in commands}
        peaks: dict[str, list[int]] = {n: [] for n in commands}
        busy: dict[str, list[float]] = {n: [] for n in commands}
        same: dict[str, bool] = dict.fromkeys(commands, True)
        for run in range(args.runs):
            names = list(commands)[run % len(commands) :] + list(commands)[: run % len(commands)]
            for tool in names:
                if out.exists():
                    out.unlink()
                drop_caches()
                before = _busy()
                wall, peak, _ = run_measured(commands[tool], env)
                busy[tool].append(_busy() - before)
                walls[tool].append(wall)
                peaks[tool].append(peak)
                same[tool] &= _digest(str(out), env) == expected
                print(f"  {tool:<18} run {run + 1}: {wall:6.2f} s", flush=True)
    finally:
        agent.terminate()
        plain.terminate()
        agent.wait()
        plain.wait()
        subprocess.run(["losetup", "-d", device], check=False)
        if out.exists():
            out.unlink()
    size = 4 << 30
    base = statistics.median(walls["nbdcopy plain NBD"])
    print(f"\ndevice digest {expected}")
    print(
        f"{'tool':<20}{'wall s':>8}{'MiB/s':>8}{'peak MiB':>10}{'busy core-s':>13}"
        f"{'throughput vs plain':>21}  digest"
    )
    for tool in commands:
        wall = statistics.median(walls[tool])
        print(
            f"{tool:<20}{wall:>8.2f}{size / wall / (1 << 20):>8.0f}"
            f"{max(peaks[tool]) / (1 << 20):>10.0f}{statistics.median(busy[tool]):>13.2f}"
            f"{base / wall:>20.2f}x  {'same' if same[tool] else 'DIFFERENT'}"
        )
    ratio = base / statistics.median(walls["p2v copy agent://"])
    ceiling = base / statistics.median(walls["nbdcopy agent TLS"])
    cores = os.cpu_count() or 1
    floor = statistics.median(busy["nbdcopy agent TLS"]) / cores
    print(f"\ntarget: at least 0.80x of the plain export; measured {ratio:.2f}x")
    print(f"nbdcopy through the same TLS export: {ceiling:.2f}x of the plain export")
    print(
        f"the TLS copy by nbdcopy keeps this machine's {cores} cores busy for "
        f"{floor * cores:.1f} core-s: even with every core busy all along it takes "
        f"{floor:.2f} s, {base / floor:.2f}x of the plain export at best"
    )
    return 0 if all(same.values()) else 1


def _busy() -> float:
    """Seconds of CPU the whole machine has spent: every process, the kernel included.

    The agent, the NBD servers and the kernel's network and disk work are not children
    of the timed command, so its own CPU time would leave most of the cost out.
    """
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def _digest(path: str, env: dict[str, str]) -> str:
    done = subprocess.run([*P2V, "checksum", path], env=env, capture_output=True, text=True)
    return done.stdout.split()[0]


if __name__ == "__main__":
    sys.exit(main())
