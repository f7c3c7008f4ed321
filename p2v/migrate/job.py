"""`p2v migrate` as a job in the journal: the checks, then a step per phase, each
recorded; the VM locked on both hosts meanwhile; the source released only once the
destination runs (or, cold, holds verified copies). A job that stops goes on with
`--resume`; a running one is stopped with `--cancel`."""

from __future__ import annotations

import os
import posixpath
import signal
import time
from collections.abc import Callable
from typing import Any

from p2v.errors import ComponentError, InputError, MigrationError, P2VError
from p2v.host import virt
from p2v.host.virt import domains, migration, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, Lock, vm_lock
from p2v.jobs.owner import this_process
from p2v.jobs.runner import Kind, Run, Step
from p2v.migrate import carry, cold, live
from p2v.migrate.checks import DiskMove, Plan, Request, make_plan
from p2v.migrate.progress import Progress
from p2v.units import format_size

MIRROR_GONE_S = 30.0  # for the destination to drop a guest whose migration failed

Say = Callable[[str], None]
MakeProgress = Callable[[str, str], Progress]  # (job id, VM) -> progress


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    request = params.get("request", {})
    mode = "live" if params.get("live") else "cold"
    return f"{request.get('vm')}: {request.get('source')} -> {request.get('destination')} ({mode})"


def _outcome(record: dict[str, Any]) -> str:
    return summary(record, head=False)


KIND = Kind("migrate", _describe, _outcome)


def migrate(
    request: Request, journal: Journal, say: Say, progress: MakeProgress, reporter: Any
) -> tuple[str, dict[str, Any]]:
    """Check, record and run a migration: (job id, its record)."""
    with virt.connection(request.source, request.connect_timeout) as src, \
            virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
        # Before the VM is looked at: a job that holds it (moving, converting) changes it.
        domain = virt.find(src, request.vm)
        uuid = domain.UUIDString()
        journal.refuse_held(_lock(src, request.source, uuid, request.vm))
        del domain
        plan = make_plan(src, dst, request, leftovers(journal, virt.identity(dst).uuid, uuid))
        locks = _locks(src, dst, request, plan)
    for lock in locks:  # refused before a job is recorded; taken below
        journal.refuse_held(lock)
    run = Run.start(KIND, {"request": request.to_json(), "live": plan.running}, journal, say)
    say(f"job {run.job_id} (`p2v show {run.job_id}` shows its steps)")

    def drive() -> dict[str, Any]:
        def check() -> dict[str, Any]:
            for lock in locks:
                run.lock(lock)
            return {"plan": plan.to_json()}

        run(Step("check", check))
        return _steps(run, request, plan, progress, reporter)

    return run.job_id, run.execute(drive)


def resume(
    job_id: str, journal: Journal, say: Say, progress: MakeProgress, reporter: Any
) -> tuple[str, dict[str, Any]]:
    """Go on with a migration that stopped: the steps done stay done."""
    if (journal.get(job_id).result or {}).get("cleaned_up") is not None:
        raise InputError(f"job {job_id} was cleaned up (`p2v migrate --cleanup`): start the "
                         "migration again")  # fmt: skip
    run = Run.resume(KIND, job_id, journal, say)
    say(f"job {job_id}: going on")

    def drive() -> dict[str, Any]:
        request = Request.from_json(run.params["request"])
        if run.previous.get("check", {}).get("state") != "done":
            raise InputError(f"job {job_id} stopped before its checks: start the migration again")
        plan = Plan.from_json(run.earlier("check")["plan"])
        with virt.connection(request.source, request.connect_timeout) as src, \
                virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
            locks = _locks(src, dst, request, plan)
        for lock in locks:
            run.lock(lock)
        return _steps(run, request, plan, progress, reporter)

    return job_id, run.execute(drive)


def _lock(conn: Any, uri: str, uuid: str, vm: str) -> Lock:
    return vm_lock(virt.identity(conn).uuid, uuid, f"{vm} on {uri}")


def _locks(src: Any, dst: Any, request: Request, plan: Plan) -> list[Lock]:
    """The VM on both hosts, by the hosts' and its own UUID."""
    return [_lock(src, request.source, plan.uuid, plan.vm),
            _lock(dst, request.destination, plan.uuid, plan.vm)]  # fmt: skip


def _steps(
    run: Run, request: Request, plan: Plan, progress: MakeProgress, reporter: Any
) -> dict[str, Any]:
    began = time.time()
    run.record = {
        "vm": plan.vm, "uuid": plan.uuid, "source": request.source,
        "destination": request.destination, "source_host": plan.source_host,
        "destination_host": plan.destination_host, "mode": "live" if plan.running else "cold",
    }  # fmt: skip
    try:
        if plan.running:
            run.record.update(_live(run, request, plan, progress))
            _release_live(run, request, plan)
        else:
            run.record.update(_cold(run, request, plan, reporter))
    except BaseException as error:
        if isinstance(error, MigrationError):
            run.record.update(error.record)
        run.record.setdefault("outcome", "cancelled" if isinstance(error, KeyboardInterrupt)
                              else "failed")  # fmt: skip
        run.record["elapsed_s"] = round(time.time() - began, 2)
        raise
    run.record["elapsed_s"] = round(time.time() - began, 2)
    return run.record


def _live(run: Run, request: Request, plan: Plan, progress: MakeProgress) -> dict[str, Any]:
    moved: list[dict[str, Any]] = []
    move = Step("migrate", lambda: {"live": True, "record": moved[0]}, settles=True)
    if not run.pending(move):
        record = dict(run(move)["record"])
    else:
        with virt.connection(request.source, request.connect_timeout) as src:
            domain = virt.lookup_uuid(src, plan.uuid)
            following = False
            try:
                if domain is not None and run.resumed:
                    # What the last run left going: followed and steered from here.
                    following = live.settle(domain, plan, request, run.say)
                here = domain is not None and (following or virt.state(domain) == "running")
            except ComponentError:
                if virt.lookup_uuid(src, plan.uuid) is not None:
                    raise
                here = False  # it went while we looked: handed over
            if not here:
                # Gone from the source: the handover finished while we were away.
                moved.append(_finished_meanwhile(request, plan))
            else:
                if any(d.replaces for d in plan.copied) and not following:
                    run(Step("remove old copies", lambda: _remove_old_copies(request, plan)))
                move = _measure_and_migrate(run, domain, request, plan, progress, following)
            record = dict(run(move)["record"])
            del domain  # freed while the source still answers
    run(Step("verify", lambda: {"running_on": _running_there(request, plan)}, again=True))
    if plan.checkpoints:  # their bitmaps came with the disks libvirt copied
        with virt.connection(request.destination, request.connect_timeout) as dst:
            _carried(run, None, dst, plan)
    return record


def _measure_and_migrate(
    run: Run, domain: Any, request: Request, plan: Plan, progress: MakeProgress, following: bool
) -> Step:
    """Step `measure`: what the guest's memory will take; then step `migrate` to run
    (`following`: to follow and steer the migration an earlier run started)."""

    def measure() -> dict[str, Any]:
        prediction = live.expect(domain, plan, request, _bandwidth(run.journal, plan))
        run.say(live.describe(prediction))
        if not (prediction.converges or request.escalate or request.timeout):
            if prediction.bandwidth_measured:
                raise InputError("pre-copy alone will not converge and --no-escalate forbids "
                                 "more: give --timeout SECONDS, or allow escalation")  # fmt: skip
            run.say("warning: pre-copy alone may not converge, and --no-escalate forbids "
                    "more; without --timeout it may run until cancelled")  # fmt: skip
        return {"prediction": prediction.to_json()}

    # Measured again on each run, but not while following what an earlier run started.
    prediction = run(Step("measure", measure, again=not following))["prediction"]

    def migrate() -> dict[str, Any]:
        shown = progress(run.job_id, plan.vm)
        try:
            record = live.run(domain, plan, request, shown, run.say, follow=following)
        finally:
            shown.close()
        record["prediction"] = prediction
        if record["outcome"] != "done":
            run.remember(record=record)
            if record["outcome"] != "post-copy failed":
                run.remember(removed=_forget_mirrors(request, plan, run.say))
            raise MigrationError(record["message"], record)
        return {"live": True, "record": record}

    return Step("migrate", migrate, settles=True)


def leftovers(journal: Journal, host: str, uuid: str) -> dict[str, dict[str, Any]]:
    """The copies of domain `uuid`'s disks that earlier moves of it left on the host
    whose UUID is `host`, by path: the newest record of each."""
    found: dict[str, dict[str, Any]] = {}
    for job in journal.jobs(1000):  # newest first
        if job.kind != KIND.name or job.state != "done" or (job.result or {}).get("uuid") != uuid:
            continue
        released = {s["name"]: s for s in journal.steps(job.id)}.get("release source") or {}
        for left in (released.get("detail") or {}).get("left", []):
            if left.get("host") == host:
                found.setdefault(left["path"], {**left, "job": job.id})
    return found


def _left_behind(src: Any, plan: Plan, run: Run) -> list[dict[str, Any]]:
    """What the source keeps of the VM's disks once it let the VM go (without
    --delete-source): each copy's path and identity, so that a move back replaces it."""
    host = virt.identity(src).uuid
    left = []
    for disk in plan.copied:
        vol = storage.volume(storage.pool(src, disk.source_pool), disk.volume)
        if vol is not None:
            copied = run.found(f"copy {disk.target}").get("child")
            left.append({"host": host, "path": disk.path, "identity": storage.identity(vol),
                         "copy_job": copied})  # fmt: skip
    return left


def _remove_old_copies(request: Request, plan: Plan) -> dict[str, Any]:
    """Step `remove old copies` of a live move: the copies an earlier move of this VM
    left on the destination go, each checked unchanged first, so that libvirt makes
    the disks there afresh for the storage copy."""
    removed = []
    with virt.connection(request.destination, request.connect_timeout) as dst:
        for disk in plan.copied:
            if disk.replaces and (vol := cold.left_as_it_was(dst, disk, request)) is not None:
                storage.delete_volume(vol)
                removed.append(disk.dest_path)
    return {"removed": removed}


def _forget_mirrors(request: Request, plan: Plan, say: Say) -> list[str]:
    """After a live migration that did not finish: the volumes libvirt made on the
    destination for the storage copy, which no domain there uses, are deleted (the
    guest's disks are whole on the source). A destination that is what failed keeps
    them, and says so."""
    try:
        return _delete_mirrors(request, plan)
    except P2VError as error:
        left = ", ".join(d.dest_path for d in plan.copied)
        say(f"warning: {request.destination} keeps the partial copies {left}: {error}")
        return []


def _delete_mirrors(request: Request, plan: Plan) -> list[str]:
    removed: list[str] = []
    if not plan.copied:
        return removed
    with virt.connection(request.destination, request.connect_timeout) as dst:
        # libvirt tears the incoming guest down after the source has given up.
        deadline = time.monotonic() + MIRROR_GONE_S
        while virt.lookup_uuid(dst, plan.uuid) is not None:
            if time.monotonic() > deadline:
                raise MigrationError(f"{request.destination} still has {plan.vm} defined")
            time.sleep(0.2)
        for disk in plan.copied:
            vol = storage.volume_at(dst, disk.dest_path)
            if vol is not None:
                storage.delete_volume(vol)
                removed.append(disk.dest_path)
    return removed


def _finished_meanwhile(request: Request, plan: Plan) -> dict[str, Any]:
    with virt.connection(request.destination, request.connect_timeout) as dst:
        domain = virt.lookup_uuid(dst, plan.uuid)
        if domain is None or virt.state(domain) != "running":
            raise MigrationError(
                f"{plan.vm} runs on neither host: not on {request.source}, nor on "
                f"{request.destination}; see `virsh -c URI list --all` on both"
            )
        stats = migration.stats_from(migration.completed_stats(domain), running=False)
        return {"mode": "live", "outcome": "done", "finished_unwatched": True,
                "downtime_ms": stats.downtime_ms, "bytes": stats.processed}  # fmt: skip


def _running_there(request: Request, plan: Plan) -> str:
    """The guest runs on the destination (set to start with it, as it was here)."""
    with virt.connection(request.destination, request.connect_timeout) as dst:
        domain = virt.lookup_uuid(dst, plan.uuid)
        if domain is None:
            raise MigrationError(f"{request.destination} has no {plan.vm} after the migration")
        virt.wait_for_state(domain, "running", 30)
        if plan.autostart:
            domains.set_autostart(domain, True)
        del domain
        return str(request.destination)


def _cold(run: Run, request: Request, plan: Plan, reporter: Any) -> dict[str, Any]:
    """Copy, make durable (with --delete-source), define there, let the source go,
    delete its disks (with --delete-source), start there: in this order, each step
    once, the data compared with what was copied before anything is defined or
    released."""
    record: dict[str, Any] = {"mode": "cold"}
    with virt.connection(request.source, request.connect_timeout) as src, \
            virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
        release = Step("release source", lambda: _release(src, run, request, plan))
        if run.pending(release):
            cold.check_shut_off(src, plan, request, "nothing more was copied")
            _copy(run, src, dst, request, plan, reporter)

            def define() -> dict[str, Any]:
                cold.check_unchanged(src, plan, run, request, "it was not defined there")
                domain = virt.find(src, plan.uuid)
                xml = domains.definition(domain)  # read now: the journal never holds it
                del domain
                cold.define(dst, plan, xml)
                return {"uri": request.destination}

            run(Step("define", define))
            _carried(run, src, dst, plan)
            run(release)
        disks = [run.found(f"copy {d.target}")["result"] for d in plan.copied]
        record.update(disks=disks, bytes=sum(d["copied"] for d in disks))
        if request.delete_source:
            deleted = run(Step("delete source", lambda: _delete_source(src, plan)))["deleted"]
            record["source_deleted"] = deleted
        run(
            Step(
                "start" if plan.autostart else "verify",
                lambda: {"started": cold.start_if_autostart(dst, plan, request.destination)},
                again=True,
            )
        )
    record["outcome"] = "done"
    return record


def _carried(run: Run, src: Any, dst: Any, plan: Plan) -> None:
    """The snapshots' and checkpoints' records made on the destination, whose copies
    of their files and bitmaps are in place (`src` None: a live move, no snapshots)."""
    if plan.snapshots and src is not None:
        made = run(Step("redefine snapshots", lambda: carry.redefine_snapshots(src, dst, plan.uuid),
                        needs=("define",)))  # fmt: skip
        run.record["snapshots"] = made["snapshots"]
    if plan.checkpoints:
        made = run(Step("redefine checkpoints",
                        lambda: carry.redefine_checkpoints(dst, plan.uuid, plan.checkpoints),
                        needs=("define",)))  # fmt: skip
        run.record["checkpoints"] = made["checkpoints"]


def _copy(run: Run, src: Any, dst: Any, request: Request, plan: Plan, reporter: Any) -> None:
    """Each disk's copy, the NVRAM's, and with --delete-source each made durable."""
    for disk in plan.copied:
        run(_copy_step(run, src, disk, request, reporter))
    nvram = run.earlier("copy nvram").get("path")
    if nvram is None:
        domain = virt.find(src, plan.uuid)
        nvram = DomainXml.parse(domains.definition(domain)).nvram
        del domain
    if nvram:
        run(_nvram_step(run, src, dst, "copy nvram", nvram, request, reporter))
    for copied in plan.nvram_files:  # the variables each snapshot saved
        run(_nvram_step(run, src, dst, f"copy {copied}", copied, request, reporter))
    if not request.delete_source:
        return
    for disk in plan.copied:
        run(_durable_step(run, dst, disk, request))
    if nvram and not run.results["copy nvram"].get("absent"):
        directory, name = posixpath.split(nvram)

        def durable_nvram() -> dict[str, Any]:
            with storage.directory_pool(dst, directory) as there:
                return cold.make_durable(
                    dst,
                    storage.pool_name(there),
                    name,
                    run.results["copy nvram"]["digest"],
                    request,
                )

        run(Step("durable nvram", durable_nvram, needs=("copy nvram",)))


def _nvram_step(
    run: Run, src: Any, dst: Any, name: str, path: str, request: Request, reporter: Any
) -> Step:
    return Step(
        name,
        lambda: cold.copy_nvram(run, src, dst, path, request, reporter),
        still=lambda done: done.get("identity") == cold.nvram_identity(src, path),
    )


def _copy_step(run: Run, src: Any, disk: DiskMove, request: Request, reporter: Any) -> Step:
    def copy() -> dict[str, Any]:
        detail = cold.copy_disk(run, src, disk, request, reporter)
        run.say(f"  {disk.target}: {format_size(detail['result']['copied'])} moved, digest "
                f"{detail['digest']}, read back equal on the destination")  # fmt: skip
        return detail

    def unchanged(done: dict[str, Any]) -> bool:
        return done.get("identity") == storage.identity(cold.source_volume(src, disk))

    return Step(f"copy {disk.target}", copy, still=unchanged)


def _durable_step(run: Run, dst: Any, disk: DiskMove, request: Request) -> Step:
    copied = f"copy {disk.target}"

    def durable() -> dict[str, Any]:
        name = posixpath.basename(disk.dest_path)
        return cold.make_durable(dst, disk.dest_pool, name, run.results[copied]["digest"], request)

    return Step(f"durable {disk.target}", durable, needs=(copied,))


def _release(src: Any, run: Run, request: Request, plan: Plan) -> dict[str, Any]:
    cold.check_unchanged(src, plan, run, request, f"{request.source} keeps it")
    # Its variable store goes with it only where its copy there is durable.
    released = cold.release(src, plan, request, nvram_durable="durable nvram" in run.results)
    if not request.delete_source:
        released["left"] = _left_behind(src, plan, run)
    return released


def _delete_source(src: Any, plan: Plan) -> dict[str, Any]:
    """The source's disks, once their copies are durable there and the VM is defined
    there and undefined here."""
    deleted = []
    for disk in plan.copied:
        vol = storage.volume(storage.pool(src, disk.source_pool), disk.volume)
        if vol is not None:
            storage.delete_volume(vol)
            deleted.append(disk.path)
    return {"deleted": deleted}


def _release_live(run: Run, request: Request, plan: Plan) -> None:
    """After a live move the source has undefined the VM (libvirt did it); with
    --delete-source its copied disks go too, now that the guest runs there."""

    def release() -> dict[str, Any]:
        with virt.connection(request.source, request.connect_timeout) as src:
            domain = virt.lookup_uuid(src, plan.uuid)
            if domain is not None:  # libvirt keeps a definition it was left with
                if virt.state(domain) != "shut off":
                    raise MigrationError(f"{plan.vm} runs on {request.source} again; left there")
                domains.release(domain, keep_nvram=True)  # never copied by us
                del domain
                if virt.lookup_uuid(src, plan.uuid) is not None:
                    raise MigrationError(f"{request.source} still has {plan.vm} defined")
            if request.delete_source:
                deleted, left = _delete_source(src, plan)["deleted"], []
            else:
                deleted, left = [], _left_behind(src, plan, run)
        run.record["source_deleted"] = deleted
        return {"undefined": True, "deleted": deleted, "left": left}

    run(Step("release source", release))


def _bandwidth(journal: Journal, plan: Plan) -> int | None:
    """The memory bandwidth the last live migration between these two hosts reached."""
    for job in journal.jobs(200):
        result = job.result or {}
        if job.kind == KIND.name and job.state == "done" and result.get("bandwidth") and \
                result.get("source_host") == plan.source_host and \
                result.get("destination_host") == plan.destination_host:  # fmt: skip
            return int(result["bandwidth"])
    return None


def cancel(job_id: str, journal: Journal) -> str:
    """Stop a migration: what was done, in words. The process running it is asked to
    stop (it stops the migration and records the outcome); a live migration left
    running by a process that is gone is stopped at the source."""
    job = journal.get(job_id)
    if job.kind != KIND.name:
        raise InputError(f"job {job_id} is a {job.kind} job, not a migration")
    if job.status not in ("running", "interrupted", "failed"):
        raise InputError(f"job {job_id} is {job.status}: nothing to cancel")
    request = Request.from_json(job.params["request"])
    checked = {s["name"]: s for s in journal.steps(job_id)}.get("check") or {}
    uuid = ((checked.get("detail") or {}).get("plan") or {}).get("uuid")
    owner = job.owner
    with virt.connection(request.source, request.connect_timeout) as src:
        domain = virt.lookup_uuid(src, uuid) if uuid else virt.lookup(src, request.vm)
        if domain is not None and migration.in_postcopy(domain):
            raise InputError(
                f"{request.vm}'s migration is in post-copy: the guest runs on "
                f"{request.destination} already and cannot go back"
            )
        if job.status == "running":
            if owner is None or owner.boot != this_process().boot:
                raise InputError(f"job {job_id} runs on another machine: stop it there")
            os.kill(owner.pid, signal.SIGINT)
            return (f"asked process {owner.pid} to stop job {job_id}; the guest stays on "
                    f"{request.source}")  # fmt: skip
        # Interrupted, or failed while libvirt may go on: a live migration libvirt still
        # runs is stopped; any other job of the domain (a backup) is not ours to stop.
        if domain is None or not job.params.get("live") or not migration.migrating_out(domain):
            journal.settling(job_id, None)  # nothing of it runs: its locks are free
            raise InputError(f"job {job_id} is {job.status} and no migration of it runs: "
                             "nothing to cancel")  # fmt: skip
        migration.abort_job(domain)
        del domain
    journal.settling(job_id, None)
    return f"stopped the migration of {request.vm} at {request.source}; the guest stays there"


def cleanup(job_id: str, journal: Journal, say: Say) -> str:
    """Remove what a failed migration that will not be resumed made on its destination
    (partial copies of the disks and of the UEFI variables), the VM being whole on its
    source and not defined there: what was done, in words. The job stays failed and
    cannot be resumed any more."""
    job = journal.get(job_id)
    if job.kind != KIND.name:
        raise InputError(f"job {job_id} is a {job.kind} job, not a migration")
    if job.status not in ("failed", "interrupted"):
        raise InputError(f"job {job_id} is {job.status}: only a migration that failed or was "
                         "interrupted is cleaned up")  # fmt: skip
    if job.settling:
        raise InputError(f"job {job_id}'s migration may still run in libvirt: "
                         f"`p2v migrate --cancel {job_id}` first")  # fmt: skip
    if (job.result or {}).get("cleaned_up") is not None:
        raise InputError(f"job {job_id} was cleaned up already")
    why = job.error or "interrupted"
    run = Run.resume(KIND, job_id, journal, say)
    try:
        removed = _clean_up(run)
    except BaseException as error:
        run.fail(error)
        raise
    record = {**(job.result or {}), "cleaned_up": removed}
    journal.fail(job_id, f"{why}; cleaned up", record, f"cleaned up: {len(removed)} removed")
    for child in journal.children(job_id):  # its copies, whose targets are gone now
        if child.status in ("failed", "interrupted"):
            journal.fail(child.id, f"its migration {job_id} was cleaned up", child.result,
                         "cleaned up")  # fmt: skip
    request = Request.from_json(run.params["request"])
    if not removed:
        return f"job {job_id}: nothing of it was left on {request.destination}"
    return f"job {job_id}: removed from {request.destination}: {', '.join(removed)}"


def _clean_up(run: Run) -> list[str]:
    request = Request.from_json(run.params["request"])
    if run.previous.get("check", {}).get("state") != "done":
        return []  # stopped before it made anything
    plan = Plan.from_json(run.earlier("check")["plan"])
    began = set(run.previous)
    with virt.connection(request.source, request.connect_timeout) as src, \
            virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
        for lock in _locks(src, dst, request, plan):
            run.lock(lock)
        if virt.lookup_uuid(src, plan.uuid) is None:
            raise InputError(
                f"{plan.vm} is no longer on {request.source}: what the job copied "
                f"to {request.destination} may be its only copy; nothing removed"
            )
        if virt.lookup_uuid(dst, plan.uuid) is not None:
            raise InputError(f"{plan.vm} is defined on {request.destination}: its disks there "
                             "are in use; nothing removed")  # fmt: skip
        storage.refresh_all(dst)
        paths = [p for d in plan.copied
                 if f"copy {d.target}" in began or {"migrate", "remove old copies"} & began
                 for p in (d.dest_path, d.dest_path + cold.STAGING)]  # fmt: skip
        removed = []
        for path in paths:
            if (vol := storage.volume_at(dst, path)) is not None:
                storage.delete_volume(vol)
                removed.append(path)
        nvram = run.earlier("copy nvram")
        if "copy nvram" in began and nvram.get("path") and not nvram.get("absent"):
            for path in (nvram["path"], nvram["path"] + cold.STAGING):
                with storage.file_volume(dst, path) as vol:
                    if vol is not None:
                        storage.delete_volume(vol)
                        removed.append(path)
        return removed


def summary(record: dict[str, Any], head: bool = True) -> str:
    """A migration's record in one line: where to, how long, the pause, the bytes,
    the passes and each escalation."""
    moved = "moved" if record.get("outcome") == "done" else record.get("outcome", "failed")
    where = (
        f"{record['vm']} {moved}: {record['source']} -> {record['destination']} "
        f"({record.get('mode', '?')})"
    )
    parts = [f"in {record.get('total_s', record.get('elapsed_s'))} s"]
    if record.get("downtime_ms") is not None:
        parts.append(f"downtime {record['downtime_ms']} ms")
    if record.get("bytes"):
        parts.append(f"{format_size(record['bytes'])} moved")
    if record.get("passes"):
        parts.append(f"{record['passes']} passes")
    for step in record.get("escalations", []):
        value = f" {step['value']}" if step["value"] is not None else ""
        parts.append(f"{step['what']}{value} at {step['at']} s")
    if record.get("source_deleted"):
        parts.append(f"source disks deleted: {', '.join(record['source_deleted'])}")
    said = ", ".join(parts)
    return f"{where}: {said}" if head else said
