"""Benchmark: `p2v copy` against nbdcopy and qemu-img convert, same input, one run.

The input is a 4 GiB raw image holding 1 GiB of random data in scattered chunks
(64 KiB to 8 MiB), and a qcow2 copy of it. Cases: file to file, qcow2 to raw, and
an NBD export (qemu-nbd) to a file. Before every run the output is removed and the
inputs are evicted from the page cache, so each tool reads them from the disk. One
more case, "cached", copies the raw file to a file once the page cache holds all of
it (an image just written, a golden image copied again and again). Every
tool is asked to make its output durable (nbdcopy --flush, qemu-img -t writeback;
p2v always flushes). Each figure is the median of several runs, the tools taking
turns in an order shuffled every round. The tools' own programs stay cached, as on
a machine that runs them, and p2v's modules are compiled to bytecode first, as an
installed package's are: a start from a cold cache costs p2v about 0.2 s (nbdcopy
0.03 s), which would count for 8% of a copy this short and nothing of a real disk's.

    python -m bench.transfer [--dir DIR] [--runs N] [--case NAME ...]

Prints wall time (median, and the range over the runs), CPU time, peak memory (the
tool and its children, sampled) and the ratio to nbdcopy, and checks that every
output has the source's digest. nbdcopy also runs a second time as a tool of its
own, "nbdcopy again": its ratio to nbdcopy is the noise of the machine, the
distance at which two equal tools can land from each other in one run.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SIZE = 4 << 30
DATA = 1 << 30
CHUNKS = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20]
P2V = [sys.executable, "-m", "p2v.cli"]
SETTLE = 3.0  # seconds
CASES = ("file", "qcow2", "nbd", "cached")
CONTROL = "nbdcopy again"


@dataclass
class Measure:
    walls: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    digests_ok: list[bool] = field(default_factory=list)


def make_source(path: Path, seed: int = 42) -> None:
    """Chunks of random data separated by random gaps, never overlapping."""
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < DATA:
        sizes.append(min(rng.choice(CHUNKS), DATA - sum(sizes)))
    cuts = sorted(rng.randrange(0, (SIZE - DATA) // 4096) * 4096 for _ in sizes)
    gaps = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.truncate(SIZE)
        pos = 0
        for gap, size in zip(gaps, sizes, strict=True):
            pos += gap
            f.seek(pos)
            f.write(rng.randbytes(size))
            pos += size
    tmp.rename(path)


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    """Wall time, peak RSS and CPU time of a command and all its children."""
    cpu_before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.1)  # walking /proc costs CPU the tools need

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')}")
    return wall, peak, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tools(source: str, fmt: str, nbdcopy_source: list[str], out: str) -> dict[str, list[str]]:
    """The command lines of one case; each tool makes its output durable."""
    nbdcopy = ["nbdcopy", "--flush", *nbdcopy_source, out]
    return {
        "p2v copy": [*P2V, "copy", source, out],
        "nbdcopy": nbdcopy,
        "qemu-img": ["qemu-img", "convert", "-t", "writeback", "-f", fmt, source, "-O", "raw", out],
        # The same nbdcopy command once more, as a tool of its own: its ratio to
        # nbdcopy is what this machine's noise alone makes of two equal tools.
        CONTROL: nbdcopy,
    }


def digest(path: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [*P2V, "checksum", path], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def evict(*paths: Path) -> None:
    """Drop these files from the page cache, so that the next reads reach the disk."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    time.sleep(SETTLE)  # see drop_caches


def warm(path: Path) -> None:
    """Read a file whole, so that the page cache holds it for the next tool."""
    os.sync()
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass
    time.sleep(SETTLE)


def compile_p2v() -> None:
    """Bytecode for p2v's modules, as pip writes it when it installs a package."""
    import p2v

    for package in (p2v.__path__[0], str(Path(p2v.__path__[0]).parent / "agent")):
        compileall.compile_dir(package, quiet=1)


def drop_caches() -> None:
    os.sync()
    if os.geteuid() == 0:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    # Deleting the last output makes a filesystem mounted with `discard` send the
    # device a gigabyte of discards; let that finish before the next tool starts.
    time.sleep(SETTLE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/p2v-bench"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help="run only this case (repeat for several; default: all)",
    )
    args = parser.parse_args()
    for tool in ("nbdcopy", "qemu-img", "qemu-nbd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing; run `make setup`")
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)  # a journal of this run's jobs only
    env = {**os.environ, "P2V_HOME": str(home)}
    compile_p2v()
    raw, qcow2, out = work / "source.raw", work / "source.qcow2", str(work / "out.raw")
    if not raw.exists():
        print(f"making {raw} (4 GiB, 1 GiB of data) ...", flush=True)
        make_source(raw)
    if not qcow2.exists():
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2) + ".tmp"],
            check=True,
        )
        os.rename(str(qcow2) + ".tmp", qcow2)
    expected = digest(str(raw), env)
    sock = work / "nbd.sock"
    server = subprocess.Popen(
        ["qemu-nbd", "-r", "-f", "raw", "--shared=8", "-t", f"--socket={sock}", str(raw)]
    )
    try:
        while not sock.exists():
            time.sleep(0.05)
        uri = f"nbd+unix:///?socket={sock}"
        nbd_qcow2 = ["[", "qemu-nbd", "-r", "-f", "qcow2", str(qcow2), "]"]
        every = {
            "file": ("file -> file", tools(str(raw), "raw", [str(raw)], out)),
            "qcow2": ("qcow2 -> raw", tools(str(qcow2), "qcow2", ["--", *nbd_qcow2], out)),
            "nbd": ("nbd -> file", tools(uri, "raw", [uri], out)),
            "cached": ("cached -> file", tools(str(raw), "raw", [str(raw)], out)),
        }
        chosen = [name for name in CASES if name in (args.case or CASES)]
        cases = dict(every[name] for name in chosen)
        hot = {every[name][0] for name in chosen if name == "cached"}
        results: dict[tuple[str, str], Measure] = {}
        for case, commands in cases.items():
            for run in range(args.runs):
                # A new order every round: in a fixed rotation a tool always runs
                # right after the same other one and inherits what it leaves behind.
                for name in random.Random(run).sample(list(commands), len(commands)):
                    if os.path.exists(out):
                        os.unlink(out)
                    if case in hot:
                        warm(raw)
                    else:
                        evict(raw, qcow2)
                    wall, peak, cpu = run_measured(commands[name], env)
                    m = results.setdefault((case, name), Measure())
                    m.walls.append(wall)
                    m.peaks.append(peak)
                    m.cpus.append(cpu)
                    m.digests_ok.append(digest(out, env) == expected)
                    print(f"  {case:<13} {name:<14} run {run + 1}: {wall:6.2f} s", flush=True)
    finally:
        server.terminate()
        server.wait()
        if os.path.exists(out):
            os.unlink(out)
    print()
    print(f"source digest {expected}")
    header = (
        f"{'case':<16}{'tool':<15}{'wall s':>7}{'range s':>12}{'cpu s':>7}{'peak MiB':>10}"
        f"{'vs nbdcopy':>12}  digest"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for case, commands in cases.items():
        base = statistics.median(results[(case, "nbdcopy")].walls)
        for name in commands:
            m = results[(case, name)]
            wall = statistics.median(m.walls)
            ok = all(m.digests_ok)
            failed |= not ok
            spread = f"{min(m.walls):.2f}-{max(m.walls):.2f}"
            print(
                f"{case:<16}{name:<15}{wall:>7.2f}{spread:>12}{statistics.median(m.cpus):>7.2f}"
                f"{max(m.peaks) / 2**20:>10.0f}"
                f"{wall / base:>11.2f}x  {'same' if ok else 'DIFFERENT'}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
