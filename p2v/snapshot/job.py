"""`p2v snapshot create|revert|delete` as jobs in the journal, each a few steps on the
step runner, the VM locked meanwhile (a migration of it waits, and so do other
snapshots of it).

A snapshot is libvirt's external one: each disk goes on in a new overlay, the memory
and device state are saved while the guest runs, then it pauses for the last of it.
A UEFI guest's variable store is not part of a libvirt snapshot: it is copied beside
itself (NAME_VARS.fd.SNAPSHOT) by the host's libvirt, and its copy is good only if
the store did not change while the snapshot was taken; a revert writes it back
before libvirt starts the guest from the saved memory.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import domains, snapshots, storage
from p2v.jobs.journal import Journal, Lock, vm_lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.snapshot import checks
from p2v.snapshot.plan import Plan, nvram_copy, rotated
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

Say = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    action: str  # create, revert, delete
    vm: str
    uri: str
    name: str
    disk_only: bool = False
    force: bool = False  # revert a running VM
    description: str = ""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    # create: a rotation: `name` is PREFIX-TIME, and after it is taken the oldest
    # PREFIX-TIME snapshots beyond `keep` are deleted.
    rotation: str | None = None
    keep: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = params.get("request", {})
    return f"{r.get('action')} {r.get('vm')}@{r.get('name')} on {r.get('uri')}"


def _outcome(result: dict[str, Any]) -> str | None:
    return summary(result) if result else None


KIND = Kind("snapshot", _describe, _outcome)


def run(request: Request, journal: Journal, say: Say) -> tuple[str, dict[str, Any]]:
    """Check, record and do `request`: (job id, its record)."""
    with virt.connection(request.uri, request.connect_timeout) as conn:
        domain = virt.find(conn, request.vm)
        lock = _lock(conn, request, domain.UUIDString())
        journal.refuse_held(lock)  # before anything is looked at: a migration moves it
        plan = None
        if request.action == "create":
            plan = checks.plan_create(conn, domain, request.uri, request.name, request.disk_only)
        elif request.action == "revert":
            checks.check_revert(domain, request.name, request.force)
        else:
            checks.check_delete(domain, request.name)
        del domain
    job = Run.start(KIND, {"request": request.to_json()}, journal, say)
    say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")

    def drive() -> dict[str, Any]:
        def check() -> dict[str, Any]:
            job.lock(lock)
            return {"plan": plan.to_json()} if plan else {}

        job(Step("check", check))
        return _steps(job, request)

    return job.job_id, job.execute(drive)


def resume(job_id: str, journal: Journal, say: Say) -> tuple[str, dict[str, Any]]:
    """Go on with a snapshot job that stopped: what libvirt finished meanwhile is
    taken as done."""
    job = Run.resume(KIND, job_id, journal, say)
    request = Request(**job.params["request"])

    def drive() -> dict[str, Any]:
        if job.previous.get("check", {}).get("state") != "done":
            raise InputError(f"job {job_id} stopped before its checks: start it again")
        with virt.connection(request.uri, request.connect_timeout) as conn:
            domain = virt.find(conn, request.vm)
            job.lock(_lock(conn, request, domain.UUIDString()))
            del domain
        return _steps(job, request)

    return job_id, job.execute(drive)


def _lock(conn: Any, request: Request, uuid: str) -> Lock:
    return vm_lock(virt.identity(conn).uuid, uuid, f"{request.vm} on {request.uri}")


def _steps(job: Run, request: Request) -> dict[str, Any]:
    job.record = {"action": request.action, "vm": request.vm, "uri": request.uri,
                  "name": request.name}  # fmt: skip
    with virt.connection(request.uri, request.connect_timeout) as conn:
        domain = virt.find(conn, request.vm)
        if request.action == "create":
            _create(job, conn, domain, Plan.from_json(job.found("check")["plan"]), request)
        elif request.action == "revert":
            _revert(job, conn, domain, request)
        else:
            _delete(job, conn, domain, request)
        del domain
    return job.record


def _create(job: Run, conn: Any, domain: Any, plan: Plan, request: Request) -> None:
    before: dict[str, Any] = {}

    def take() -> dict[str, Any]:
        if (made := snapshots.lookup(domain, plan.name)) is not None:
            # Taken by libvirt after our last run stopped: a UEFI guest's variables
            # can no longer be matched with it, so it is taken again.
            if not plan.nvram:
                return {"taken_earlier": True}
            snapshots.delete(made)
        if plan.nvram:
            before.update(_nvram_identity(conn, plan.nvram))
        live = plan.memory_file is not None
        done = snapshots.create(domain, plan.xml(request.description), live=live,
                                disk_only=not live)  # fmt: skip
        paused = None if done.paused_s is None else round(done.paused_s * 1000)
        job.say(
            f"snapshot {plan.name} of {plan.vm} taken in {done.took_s:.1f} s"
            + (f", the guest paused {paused} ms" if paused is not None else "")
        )
        return {"paused_ms": paused, "took_s": round(done.took_s, 2)}

    taken = job(Step("snapshot", take, settles=True))
    if plan.nvram:

        def copy_nvram() -> dict[str, Any]:
            if not before:
                raise InputError(
                    f"{plan.vm}'s UEFI variables cannot be matched with the snapshot "
                    f"{plan.name} any more: delete it, take it again"
                )
            copy = _copy_nvram(conn, plan.nvram or "", plan.name)
            if _nvram_identity(conn, plan.nvram or "") != before:
                raise InputError(f"{plan.vm} wrote its UEFI variables while the snapshot was "
                                 f"taken; delete {plan.name} and take it again")  # fmt: skip
            return {"copy": copy}

        job(Step("nvram", copy_nvram, needs=("snapshot",)))
    if request.rotation and request.keep:
        prefix, keep = request.rotation, request.keep

        def rotate() -> dict[str, Any]:
            listed = [(s.name, s.created) for s in snapshots.listed(domain)]
            gone = rotated(listed, prefix, keep)
            for name in gone:
                if (old := snapshots.lookup(domain, name)) is not None:
                    snapshots.delete(old)
                if plan.nvram:
                    _drop_nvram_copy(conn, plan.nvram, name)
            if gone:
                job.say(f"rotation {prefix}: {len(gone)} deleted ({', '.join(gone)}), "
                        f"{keep} kept")  # fmt: skip
            return {"deleted": gone}

        job.record["rotated_out"] = job(Step("rotate", rotate))["deleted"]
    job.record.update(
        memory=plan.memory_file is not None, memory_file=plan.memory_file,
        overlays={d.target: d.overlay for d in plan.disks},
        nvram=nvram_copy(plan.nvram, plan.name) if plan.nvram else None,
        paused_ms=taken.get("paused_ms"), took_s=taken.get("took_s"),
    )  # fmt: skip


def _nvram_identity(conn: Any, nvram: str) -> dict[str, Any]:
    with storage.file_volume(conn, nvram) as vol:
        if vol is None:
            raise InputError(f"the UEFI variable store {nvram} is gone")
        return storage.identity(vol)


def _copy_nvram(conn: Any, nvram: str, snapshot: str) -> str:
    """The variable store copied beside itself by the host's libvirt, synced."""
    directory, name = posixpath.split(nvram)
    copy = posixpath.basename(nvram_copy(nvram, snapshot))
    with storage.directory_pool(conn, directory) as pool:
        storage.refresh(pool)
        if (old := storage.volume(pool, copy)) is not None:
            storage.delete_volume(old)
        storage.durable_clone(storage.volume(pool, name), copy)
    return nvram_copy(nvram, snapshot)


def _put_back_nvram(conn: Any, nvram: str, snapshot: str) -> bool:
    """The variable store as it was at `snapshot`, written over the live one (the guest
    stopped); False when the snapshot has no copy of it."""
    directory, name = posixpath.split(nvram)
    with storage.directory_pool(conn, directory) as pool:
        storage.refresh(pool)
        copy = storage.volume(pool, posixpath.basename(nvram_copy(nvram, snapshot)))
        live = storage.volume(pool, name)
        if copy is None or live is None:
            return False
        data = storage.read(conn, copy, 0, storage.length(copy))
        storage.write(conn, live, 0, data)
    return True


def _revert(job: Run, conn: Any, domain: Any, request: Request) -> None:
    info = checks.check_revert(domain, request.name, force=True)  # refused before the job
    snapshot = checks.snapshot_of(domain, request.name)
    nvram = domains.nvram(domain)
    if nvram:

        def nvram_back() -> dict[str, Any]:
            virt.destroy(domain)  # its state since the snapshot is thrown away anyway
            return {"restored": _put_back_nvram(conn, nvram, request.name)}

        job(Step("nvram", nvram_back))

    def back() -> dict[str, Any]:
        snapshots.revert(snapshot)
        return {}

    job(Step("revert", back, settles=True))
    state = virt.state(domain)
    job.record.update(memory=info.memory_file is not None, state=state)
    job.say(f"{request.vm} is back at {request.name}: {state}")


def _delete(job: Run, conn: Any, domain: Any, request: Request) -> None:
    def delete() -> dict[str, Any]:
        snapshot = snapshots.lookup(domain, request.name)
        if snapshot is None:  # libvirt finished it after our last run stopped
            return {"deleted_earlier": True}
        snapshots.delete(snapshot)
        return {}

    job(Step("delete", delete, settles=True))
    if nvram := domains.nvram(domain):
        job(Step("nvram", lambda: {"deleted": _drop_nvram_copy(conn, nvram, request.name)}))


def _drop_nvram_copy(conn: Any, nvram: str, snapshot: str) -> str:
    """The variable store's copy that went with `snapshot`, deleted (if there is one)."""
    copy = nvram_copy(nvram, snapshot)
    with storage.file_volume(conn, copy) as vol:
        if vol is not None:
            storage.delete_volume(vol)
    return copy


def summary(record: dict[str, Any]) -> str:
    """A snapshot job's record in one line."""
    what = f"{record.get('vm')}@{record.get('name')}"
    if record.get("action") == "create":
        parts = ["memory and disks" if record.get("memory") else "disks only"]
        if record.get("paused_ms") is not None:
            parts.append(f"paused {record['paused_ms']} ms")
        if record.get("nvram"):
            parts.append("UEFI variables kept")
        return f"{what} taken: {', '.join(parts)}"
    if record.get("action") == "revert":
        return f"{what} reverted: {record.get('state', '?')}"
    return f"{what} deleted"
