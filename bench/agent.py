"""Benchmark: reading a server's disks through the agent, against plain NBD.

Two 4 GiB loop devices: one holding 1 GiB of data (the image of bench.transfer), one
blank. Each is copied, in one run, through `p2v-agent serve` on loopback (`p2v copy
agent://...`: TLS-PSK, checked digest) and by `nbdcopy` from an unauthenticated
`qemu-nbd` export of the same device; all write a sparse raw file that is flushed. A
block device reports no holes, so nbdcopy reads all of it; the agent scans each disk
it serves once, on the server, and p2v does not fetch the runs of zeros it found:
the "read" column is what crossed the network. The scan's own time is printed. A
third row, `nbdcopy` through the agent's own TLS export (it knows nothing of the
zeros), shows what the encryption costs a C client on this machine: client, agent
and both TLS ends share its cores. The CPU the whole machine spends on each copy is
measured too. The loop devices read their files with direct I/O, as a disk would be
read: a buffered loop device copies every byte once more in a kernel thread.

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
SIZE = 4 << 30
PLAIN = "nbdcopy plain NBD"
FIGURES = ("wall", "peak", "busy", "read", "same")


def attach(image: Path) -> str:
    return subprocess.run(
        ["losetup", "--find", "--show", "--read-only", "--direct-io=on", str(image)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def wait_for_scans(names: list[str], key: Path) -> dict[str, float]:
    """Seconds until the agent has scanned each disk for zeros, from now."""
    from agent.protocol import Address
    from p2v.host.agentclient import AgentSession

    started, took = time.monotonic(), {}
    with AgentSession(Address("127.0.0.1", AGENT_PORT), str(key)) as session:
        while len(took) < len(names):
            for name in names:
                found = session.zero_map(name)
                if name not in took and found and found.complete:
                    took[name] = time.monotonic() - started
            time.sleep(0.1)
    return took


def last_read(home: Path) -> int:
    """Bytes the last `p2v copy` read from its source, from the journal."""
    from p2v.jobs.journal import Journal

    journal = Journal(home / "journal.sqlite")
    try:
        result = journal.jobs(1)[0].result
        return int(result["read"]) if result else -1
    finally:
        journal.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/p2v-bench"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.agent needs root: it attaches loop devices")
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    env = {**os.environ, "P2V_HOME": str(home)}
    raw, blank, out = work / "source.raw", work / "blank.raw", work / "out.raw"
    if not raw.exists():
        print(f"making {raw} (4 GiB, 1 GiB of data) ...", flush=True)
        make_source(raw)
    with open(blank, "wb") as f:
        f.truncate(SIZE)
    key = work / "agent.secret"
    key.write_text(secrets.token_hex(16) + "\n")
    key.chmod(0o600)
    devices = {"1 GiB of data": attach(raw), "blank": attach(blank)}
    names = [os.path.basename(d) for d in devices.values()]
    started = time.monotonic()
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--listen", f"127.0.0.1:{AGENT_PORT}",
         "--secret-file", str(key), *(a for n in names for a in ("--disk", n))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    plain = subprocess.Popen(
        ["qemu-nbd", "-r", "-f", "raw", "--shared=8", "-t", "-b", "127.0.0.1",
         "-p", str(PLAIN_PORT), "-x", names[0], devices["1 GiB of data"]]
    )  # fmt: skip
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    expected: dict[str, str] = {}
    try:
        assert agent.stdout is not None
        while "secret fingerprint" not in (line := agent.stdout.readline()):
            if not line:
                raise SystemExit("p2v-agent serve did not start")
        scans = wait_for_scans(names, key)
        for disk, name in zip(devices, names, strict=True):
            print(f"  scan for zeros of the disk '{disk}': done {scans[name]:.1f} s after the"
                  f" agent was listening ({time.monotonic() - started:.1f} s after it started)",
                  flush=True)  # fmt: skip
        psk = write_psk_file(work, normalize_secret(key.read_text()))
        for disk, device in devices.items():
            name = os.path.basename(device)
            expected[disk] = _digest(device, env)
            tls_uri = f"nbds://{PSK_IDENTITY}@127.0.0.1:{AGENT_PORT}/{name}?tls-psk-file={psk}"
            commands = {
                "p2v copy agent://": [*P2V, "copy", f"agent://127.0.0.1:{AGENT_PORT}/{name}",
                                      str(out), "--secret-file", str(key)],
                "nbdcopy agent TLS": ["nbdcopy", "--flush", tls_uri, str(out)],
            }  # fmt: skip
            if disk == "1 GiB of data":
                commands[PLAIN] = ["nbdcopy", "--flush",
                                   f"nbd://127.0.0.1:{PLAIN_PORT}/{name}", str(out)]  # fmt: skip
            for run in range(args.runs):
                order = (
                    list(commands)[run % len(commands) :] + list(commands)[: run % len(commands)]
                )
                for tool in order:
                    if out.exists():
                        out.unlink()
                    drop_caches()
                    before = _busy()
                    wall, peak, _ = run_measured(commands[tool], env)
                    row = rows.setdefault(
                        (disk, tool), {k: [] for k in ("wall", "peak", "busy", "read", "same")}
                    )
                    row["busy"].append(_busy() - before)
                    row["wall"].append(wall)
                    row["peak"].append(peak)
                    row["read"].append(last_read(home) if tool.startswith("p2v") else SIZE)
                    row["same"].append(float(_digest(str(out), env) == expected[disk]))
                    print(f"  {disk:<14} {tool:<18} run {run + 1}: {wall:6.2f} s", flush=True)
    finally:
        agent.terminate()
        plain.terminate()
        agent.wait()
        plain.wait()
        for device in devices.values():
            subprocess.run(["losetup", "-d", device], check=False)
        if out.exists():
            out.unlink()
    print()
    print(
        f"{'disk':<15}{'tool':<20}{'wall s':>8}{'MiB/s':>8}{'read MiB':>10}{'peak MiB':>10}"
        f"{'busy core-s':>13}{'vs plain':>10}  digest"
    )
    base = statistics.median(rows[("1 GiB of data", PLAIN)]["wall"])
    for (disk, tool), row in rows.items():
        wall = statistics.median(row["wall"])
        print(
            f"{disk:<15}{tool:<20}{wall:>8.2f}{SIZE / wall / (1 << 20):>8.0f}"
            f"{max(row['read']) / (1 << 20):>10.0f}{max(row['peak']) / (1 << 20):>10.0f}"
            f"{statistics.median(row['busy']):>13.2f}{base / wall:>9.2f}x"
            f"  {'same' if all(row['same']) else 'DIFFERENT'}"
        )
    ratio = base / statistics.median(rows[("1 GiB of data", "p2v copy agent://")]["wall"])
    ceiling = base / statistics.median(rows[("1 GiB of data", "nbdcopy agent TLS")]["wall"])
    print(f"\ntarget: at least 0.80x of the plain export; measured {ratio:.2f}x")
    print(f"nbdcopy through the same TLS export: {ceiling:.2f}x of the plain export")
    return 0 if all(all(r["same"]) for r in rows.values()) else 1


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
