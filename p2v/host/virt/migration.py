"""Live migration through libvirt, peer to peer: the source host's daemon drives it,
so it goes on and ends cleanly (the guest kept on the source, or handed over) whatever
happens to this process. We start it, read its job, and steer it: the downtime limit,
the switch to post-copy, an abort."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from p2v.errors import ComponentError
from p2v.host.virt.connection import failing_as, libvirt_module

PAGE = 4096
# What QEMU's auto-converge throttles the guest's vCPUs by at first, and adds per pass
# that still outruns the link (percent).
THROTTLE_INITIAL, THROTTLE_STEP = 20, 10


@dataclass(frozen=True)
class MigrationSettings:
    dest_uri: str
    live: bool = True
    copy_disks: tuple[str, ...] = ()  # targets (vda) whose storage goes along
    persist_xml: str | None = None  # the definition the destination keeps
    postcopy: bool = False  # let a switch to post-copy happen
    auto_converge: bool = False  # let QEMU throttle a guest that outruns the link
    bandwidth_mib: int | None = None  # MiB/s cap
    tls: bool = False  # the stream between the two QEMUs (memory and disks) over TLS


@dataclass
class MigrationStats:
    """One reading of a running migration (libvirt's job statistics)."""

    running: bool
    elapsed_ms: int = 0
    iteration: int = 0  # pre-copy passes over memory begun
    memory_total: int = 0
    memory_remaining: int = 0
    memory_processed: int = 0
    disk_total: int = 0
    disk_remaining: int = 0
    disk_processed: int = 0
    dirty_rate: int = 0  # bytes/s the guest dirties, as QEMU measures it between passes
    bandwidth: int = 0  # bytes/s of memory sent
    throttle: int = 0  # auto-converge's vCPU throttle, percent
    postcopy_requests: int = 0
    downtime_ms: int | None = None  # once completed: the guest's pause, by QEMU

    @property
    def processed(self) -> int:
        return self.memory_processed + self.disk_processed


def stats_from(raw: dict[str, Any], running: bool) -> MigrationStats:
    page = raw.get("memory_page_size", PAGE) or PAGE
    return MigrationStats(
        running=running,
        elapsed_ms=raw.get("time_elapsed", 0),
        iteration=raw.get("memory_iteration", 0),
        memory_total=raw.get("memory_total", 0),
        memory_remaining=raw.get("memory_remaining", 0),
        memory_processed=raw.get("memory_processed", 0),
        disk_total=raw.get("disk_total", 0),
        disk_remaining=raw.get("disk_remaining", 0),
        disk_processed=raw.get("disk_processed", 0),
        dirty_rate=raw.get("memory_dirty_rate", 0) * page,
        bandwidth=raw.get("memory_bps", 0),
        throttle=raw.get("auto_converge_throttle", 0),
        postcopy_requests=raw.get("memory_postcopy_requests", 0),
        downtime_ms=raw.get("downtime"),
    )


# VIR_MIGRATE_PARAM_MIGRATE_DISKS_DETECT_ZEROES, libvirt 10.9 (Debian's python binding
# 9.0 has no name for it, and passes it on as it is).
DETECT_ZEROES = "migrate_disks_detect_zeroes"
DETECT_ZEROES_SINCE = 10_009_000


class Migration:
    """One live migration of `domain` to another host, run in a thread of ours (the
    libvirt call blocks until the migration ends) and read or steered meanwhile."""

    def __init__(self, domain: Any, settings: MigrationSettings) -> None:
        self.domain, self.settings = domain, settings
        self.name = domain.name()
        self.error: str | None = None
        self.aborted = False
        self.completed: dict[str, Any] | None = None  # the job's final statistics
        self._thread = threading.Thread(target=self._run, name=f"migrate-{self.name}")
        self._done = threading.Event()
        self._callback: int | None = None

    def flags(self) -> int:
        libvirt = libvirt_module()
        s = self.settings
        flags = (
            libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        )
        if s.live:
            flags |= libvirt.VIR_MIGRATE_LIVE
        if s.copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if s.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if s.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if s.tls:
            flags |= libvirt.VIR_MIGRATE_TLS
        return flags

    def params(self) -> dict[str, Any]:
        libvirt = libvirt_module()
        s = self.settings
        params: dict[str, Any] = {}
        if s.copy_disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(s.copy_disks)
            if self.domain.connect().getLibVersion() >= DETECT_ZEROES_SINCE:
                # Zeros the mirror meets stay holes on the destination: thin stays thin.
                params[DETECT_ZEROES] = list(s.copy_disks)
        if s.persist_xml:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = s.persist_xml
        if s.auto_converge:
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = THROTTLE_INITIAL
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = THROTTLE_STEP
        if s.bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = s.bandwidth_mib
        return params

    def start(self) -> None:
        self._on_completion()
        self._thread.start()

    def follow(self) -> None:
        """Watch, instead of starting, the migration of the domain that libvirt runs
        already (started by a process that is gone): `done` once it ends, `error` set
        unless it handed the guest over."""
        self._on_completion()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{self.name}")
        self._thread.start()

    def _follow(self) -> None:
        libvirt = libvirt_module()
        try:
            while job_running(self.domain):
                time.sleep(0.2)
            try:
                state, _ = self.domain.state()
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    self.error = error.get_error_message()
                return  # the source let it go: handed over
            if state != libvirt.VIR_DOMAIN_SHUTOFF:
                with contextlib.suppress(libvirt.libvirtError):
                    ended = self.domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
                    self.error = ended.get("errmsg")
                self.error = self.error or "the migration ended without handing the guest over"
        finally:
            self._done.set()

    def _on_completion(self) -> None:
        libvirt = libvirt_module()
        conn = self.domain.connect()

        def completed(_conn: Any, dom: Any, stats: dict[str, Any], _opaque: Any) -> None:
            if dom.UUIDString() == self.domain.UUIDString():
                self.completed = stats

        with failing_as(f", watching {self.name}'s migration"):
            self._callback = conn.domainEventRegisterAny(
                self.domain, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, completed, None
            )

    def _run(self, flags: int = 0) -> None:
        libvirt = libvirt_module()
        try:
            self.domain.migrateToURI3(self.settings.dest_uri, self.params(), flags or self.flags())
        except libvirt.libvirtError as error:
            self.error = error.get_error_message()
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def stats(self) -> MigrationStats:
        return job_stats(self.domain)

    def set_max_downtime(self, ms: int) -> None:
        with failing_as(f", setting {self.name}'s downtime limit"):
            self.domain.migrateSetMaxDowntime(ms)

    def start_postcopy(self) -> None:
        with failing_as(f", switching {self.name}'s migration to post-copy"):
            self.domain.migrateStartPostCopy()

    def abort(self) -> None:
        """Stop the migration; the guest goes on on the source. Too late once post-copy
        has begun (the source no longer has the newest memory): libvirt refuses."""
        libvirt = libvirt_module()
        self.aborted = True
        with contextlib.suppress(libvirt.libvirtError):
            self.domain.abortJob()

    def recover(self, timeout: float) -> bool:
        """After a post-copy that broke off: resume it (QEMU's migrate-recover), once.
        True when the guest then runs on the destination."""
        libvirt = libvirt_module()
        flags = self.flags() | libvirt.VIR_MIGRATE_POSTCOPY_RESUME
        self.error, self._done = None, threading.Event()
        thread = threading.Thread(target=self._run, args=(flags,), daemon=True)
        thread.start()
        self._done.wait(timeout)
        return self.done and self.error is None

    def close(self) -> None:
        libvirt = libvirt_module()
        if self._callback is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self.domain.connect().domainEventDeregisterAny(self._callback)
            self._callback = None


def job_stats(domain: Any) -> MigrationStats:
    """The domain's job now; not running once libvirt has no job for the domain (or
    no longer the domain: a source that has let it go)."""
    libvirt = libvirt_module()
    try:
        raw = domain.jobStats()
    except libvirt.libvirtError:
        return MigrationStats(running=False)
    under_way = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
    return stats_from(raw, raw.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in under_way)


def job_running(domain: Any) -> bool:
    """Whether the domain has a job under way (a migration libvirt still runs)."""
    return job_stats(domain).running


def migrating_out(domain: Any) -> bool:
    """Whether the domain's job under way is an outgoing migration (not a backup, a
    snapshot or a save, which a migration's cancel must leave alone)."""
    libvirt = libvirt_module()
    try:
        raw = domain.jobStats()
    except libvirt.libvirtError:
        return False
    under_way = raw.get("type") in (
        libvirt.VIR_DOMAIN_JOB_BOUNDED,
        libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
    )
    return under_way and raw.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT


def abort_job(domain: Any) -> None:
    """Stop the domain's running job (a migration), from any connection to its host."""
    with failing_as(f", stopping {domain.name()}'s migration"):
        domain.abortJob()


def completed_stats(domain: Any, timeout: float = 5.0) -> dict[str, Any]:
    """A domain's last finished job's statistics (the destination keeps those of the
    incoming migration); empty when libvirt has none within `timeout`."""
    libvirt = libvirt_module()
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(libvirt.libvirtError):
            stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            if stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
                return dict(stats)
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.1)


def paused_reason(domain: Any) -> str | None:
    """Why a paused domain is paused ("post-copy failed", "migration", ...), or None."""
    libvirt = libvirt_module()
    reasons = {
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migration",
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "post-copy",
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "post-copy failed",
        libvirt.VIR_DOMAIN_PAUSED_USER: "paused by a user",
    }
    with failing_as(f", reading the state of {domain.name()}"):
        state, reason = domain.state()
    if state != libvirt.VIR_DOMAIN_PAUSED:
        return None
    return reasons.get(reason, "paused")


def in_postcopy(domain: Any) -> bool:
    """Whether the domain's outgoing migration has switched to post-copy: from then
    on the destination holds its newest memory, and nothing can stop it."""
    try:
        return paused_reason(domain) in ("post-copy", "post-copy failed")
    except ComponentError:
        return False


def cpu_incompatibility(dest: Any, domain_xml: str) -> str | None:
    """Why the destination's hypervisor cannot run the domain's CPU, or None when it
    can (libvirt's CPU comparison against what that host's QEMU offers)."""
    libvirt = libvirt_module()
    root = ET.fromstring(domain_xml)
    cpu = root.find("cpu")
    if cpu is None or cpu.get("mode", "custom") != "custom" or cpu.find("model") is None:
        return None  # host-model/passthrough: libvirt checks these itself
    os_type = root.find("os/type")
    arch = os_type.get("arch", "x86_64") if os_type is not None else "x86_64"
    machine = os_type.get("machine") if os_type is not None else None
    try:
        result = dest.compareHypervisorCPU(
            None, arch, machine, root.get("type", "kvm"), ET.tostring(cpu, encoding="unicode"),
            libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE,
        )  # fmt: skip
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
            return error.get_error_message()
        raise ComponentError(f"libvirt, comparing CPUs: {error.get_error_message()}") from error
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return "its CPU model is not one the destination's hypervisor can run"
    return None
