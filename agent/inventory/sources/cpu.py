"""CPU count, topology and model from /proc/cpuinfo (sysfs topology as a fallback)."""

from __future__ import annotations

from agent.inventory.model import Cpu
from agent.inventory.probe import Probe


def parse_cpuinfo(text: str) -> Cpu:
    processors: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                processors.append(current)
                current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        processors.append(current)
    processors = [p for p in processors if "processor" in p]
    cpu = Cpu(threads=len(processors) or None)
    if not processors:
        return cpu
    first = processors[0]
    cpu.vendor = first.get("vendor_id")
    cpu.model = first.get("model name")
    cpu.flags = first.get("flags", "").split()
    if all("physical id" in p for p in processors):
        cpu.sockets = len({p["physical id"] for p in processors})
        if all("core id" in p for p in processors):
            cpu.cores = len({(p["physical id"], p["core id"]) for p in processors})
    return cpu


def read_cpu(probe: Probe) -> Cpu:
    text = probe.read("/proc/cpuinfo")
    if text is None:
        probe.note("/proc/cpuinfo unreadable: CPU model and flags unknown")
        cpu = Cpu()
    else:
        cpu = parse_cpuinfo(text)
    if cpu.sockets is None:
        _topology_from_sysfs(probe, cpu)
    return cpu


def _topology_from_sysfs(probe: Probe, cpu: Cpu) -> None:
    base = probe.path("/sys/devices/system/cpu")
    packages: set[str] = set()
    cores: set[tuple[str, str]] = set()
    count = 0
    for topology in sorted(base.glob("cpu[0-9]*/topology")):
        package = probe.read(topology / "physical_package_id")
        core = probe.read(topology / "core_id")
        if package is None or core is None:
            continue
        count += 1
        packages.add(package)
        cores.add((package, core))
    if count:
        cpu.sockets, cpu.cores = len(packages), len(cores)
        cpu.threads = cpu.threads or count
    else:
        probe.note("CPU topology unknown (no physical id in /proc/cpuinfo, no sysfs topology)")
