"""`p2v migrate` as a job in the journal: the checks, then a step per phase, each
recorded; the VM locked on both hosts meanwhile; the source released only once the
destination runs (or, cold, holds verified copies). A job that stops goes on with
`--resume`; a running one is stopped with `--cancel`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from p2v.errors import BusyError, InputError, MigrationError, P2VError
from p2v.host import virt
from p2v.host.virt import domains, migration, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, vm_resource
from p2v.jobs.owner import this_process
from p2v.jobs.steps import Step
from p2v.migrate import cold, live
from p2v.migrate.checks import Plan, Request, make_plan
from p2v.migrate.progress import Progress
from p2v.units import format_size

KIND = "migrate"
MIRROR_GONE_S = 30.0  # for the destination to drop a guest whose migration failed

Say = Callable[[str], None]
MakeProgress = Callable[[str, str], Progress]  # (job id, VM) -> progress


def migrate(
    request: Request, journal: Journal, say: Say, progress: MakeProgress, reporter: Any
) -> tuple[str, dict[str, Any]]:
    """Check, record and run a migration: (job id, its record)."""
    # Before the VM is looked at: a job that holds it (moving, converting) changes it.
    journal.refuse_held(vm_resource(request.source, request.vm))
    with virt.connection(request.source, request.connect_timeout) as src, \
            virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
        plan = make_plan(src, dst, request)
    resources = [vm_resource(request.source, plan.vm), vm_resource(request.destination, plan.vm)]
    for resource in resources:  # refused before a job is recorded; taken below
        journal.refuse_held(resource)
    job = journal.create(KIND, {"request": request.to_json(), "live": plan.running})
    say(f"job {job.id} (`p2v show {job.id}` shows its steps)")
    step = Step(journal, job.id, say)
    with step("check") as detail:
        for resource in resources:
            journal.lock(resource, job.id)
        detail["plan"] = plan.to_json()
    return job.id, _run(job.id, request, plan, journal, step, say, progress, reporter, {})


def resume(
    job_id: str, journal: Journal, say: Say, progress: MakeProgress, reporter: Any
) -> tuple[str, dict[str, Any]]:
    """Go on with a migration that stopped: the steps done stay done."""
    job = journal.claim(job_id, KIND)
    request = Request.from_json(job.params["request"])
    previous = {s["name"]: s for s in journal.steps(job_id)}
    checked = previous.get("check", {})
    say(f"job {job_id}: going on")
    step = Step(journal, job_id, say)
    if checked.get("state") != "done":
        journal.fail(job_id, "stopped before its checks were done: start it again")
        raise InputError(f"job {job_id} stopped before its checks: start the migration again")
    plan = Plan.from_json(checked["detail"]["plan"])
    try:
        for resource in (vm_resource(request.source, plan.vm),
                         vm_resource(request.destination, plan.vm)):  # fmt: skip
            journal.lock(resource, job_id)
    except BusyError as error:
        journal.fail(job_id, str(error))
        raise
    return job_id, _run(job_id, request, plan, journal, step, say, progress, reporter, previous)


def _run(
    job_id: str,
    request: Request,
    plan: Plan,
    journal: Journal,
    step: Step,
    say: Say,
    progress: MakeProgress,
    reporter: Any,
    previous: dict[str, Any],
) -> dict[str, Any]:
    began = time.time()
    record: dict[str, Any] = {
        "vm": plan.vm, "uuid": plan.uuid, "source": request.source,
        "destination": request.destination, "source_host": plan.source_host,
        "destination_host": plan.destination_host, "mode": "live" if plan.running else "cold",
    }  # fmt: skip
    try:
        if plan.running:
            record.update(_live(job_id, request, plan, journal, step, say, progress, previous))
        else:
            record.update(_cold(job_id, request, plan, journal, step, say, reporter, previous))
        _release(request, plan, step, previous, record)
    except BaseException as error:
        if isinstance(error, MigrationError):
            record.update(error.record)
        record.setdefault("outcome", "cancelled" if isinstance(error, KeyboardInterrupt)
                          else "failed")  # fmt: skip
        record["elapsed_s"] = round(time.time() - began, 2)
        journal.fail(job_id, str(error) or type(error).__name__, record)
        raise
    record["elapsed_s"] = round(time.time() - began, 2)
    journal.finish(job_id, record)
    return record


def _done(previous: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = previous.get(name)
    return found["detail"] if found and found["state"] == "done" else None


def _live(
    job_id: str, request: Request, plan: Plan, journal: Journal, step: Step, say: Say,
    progress: MakeProgress, previous: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    earlier = _done(previous, "migrate")
    record = dict(earlier["record"]) if earlier else None
    if record is None:
        with virt.connection(request.source, request.connect_timeout) as src:
            domain = virt.lookup_uuid(src, plan.uuid)
            if domain is not None and previous:
                live.settle(domain, plan, request, say)  # what the last run left going
            if domain is None or virt.state(domain) != "running":
                # Gone from the source: the handover finished while we were away.
                record = _finished_meanwhile(request, plan)
            else:
                record = _measure_and_migrate(
                    job_id, domain, request, plan, journal, step, say, progress
                )
            del domain  # freed while the source still answers
    with step("verify") as detail:
        detail["running_on"] = _running_there(request, plan)
    return record


def _measure_and_migrate(
    job_id: str, domain: Any, request: Request, plan: Plan, journal: Journal, step: Step,
    say: Say, progress: MakeProgress,
) -> dict[str, Any]:  # fmt: skip
    with step("measure") as detail:
        prediction = live.expect(domain, plan, request, _bandwidth(journal, plan))
        detail["prediction"] = prediction.to_json()
        say(live.describe(prediction))
        if not (prediction.converges or request.escalate or request.timeout):
            if prediction.bandwidth_measured:
                raise InputError("pre-copy alone will not converge and --no-escalate forbids "
                                 "more: give --timeout SECONDS, or allow escalation")  # fmt: skip
            say("warning: pre-copy alone may not converge, and --no-escalate forbids more; "
                "without --timeout it may run until cancelled")  # fmt: skip
    shown = progress(job_id, plan.vm)
    try:
        with step("migrate") as detail:
            detail["live"] = True
            record = live.run(domain, plan, request, shown, say)
            record["prediction"] = prediction.to_json()
            detail["record"] = record
            if record["outcome"] != "done":
                if record["outcome"] != "post-copy failed":
                    detail["removed"] = _forget_mirrors(request, plan, say)
                raise MigrationError(record["message"], record)
    finally:
        shown.close()
    return record


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


def _cold(
    job_id: str, request: Request, plan: Plan, journal: Journal, step: Step, say: Say,
    reporter: Any, previous: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    record: dict[str, Any] = {"mode": "cold", "disks": []}
    with virt.connection(request.source, request.connect_timeout) as src:
        _still_shut_off(src, request, plan)
    for disk in plan.copied:
        name = f"copy {disk.target}"
        if earlier := _done(previous, name):
            record["disks"].append(earlier["result"])
            continue
        before = ((previous.get(name) or {}).get("detail") or {}).get("copy_job")
        with step(name) as detail:

            def remember(copy_job: str, name: str = name, detail: dict[str, Any] = detail) -> None:
                detail["copy_job"] = copy_job
                journal.step_detail(job_id, name, detail)

            if before:  # kept in this run's record too: a second stop resumes it again
                remember(before)
            copied = cold.copy_disk(disk, request, journal, job_id, reporter, before, remember)
            cold.check_copied(copied, disk)
            detail.update(copy_job=copied.job_id, digest=copied.digest, result={
                "target": disk.target, "digest": copied.digest, "size": copied.size,
                "copied": copied.copied, "verified": copied.verified,
            })  # fmt: skip
            record["disks"].append(detail["result"])
            say(f"  {disk.target}: {format_size(copied.copied)} moved, digest {copied.digest}, "
                "read back equal on the destination")  # fmt: skip
    record["bytes"] = sum(d["copied"] for d in record["disks"])
    with virt.connection(request.source, request.connect_timeout) as src, \
            virt.connection(request.destination, request.connect_timeout) as dst:  # fmt: skip
        domain = virt.find(src, plan.uuid)
        xml = domains.definition(domain)  # read now: the journal never holds it
        del domain
        nvram = DomainXml.parse(xml).nvram
        if nvram and not _done(previous, "copy nvram"):
            with step("copy nvram") as detail:
                copied = cold.copy_nvram(src, dst, nvram, request, journal, job_id, reporter)
                detail.update(path=nvram, digest=copied.digest, verified=copied.verified)
        _still_shut_off(src, request, plan)  # nothing started it while its disks were copied
        with step("define") as detail:
            cold.define(dst, plan, xml)
            detail["uri"] = request.destination
        with step("start" if plan.autostart else "verify") as detail:
            detail["started"] = cold.start_if_autostart(dst, plan, request.destination)
    record["outcome"] = "done"
    return record


def _still_shut_off(src: Any, request: Request, plan: Plan) -> None:
    """A cold migration copies disks nothing writes: refused once the VM runs again."""
    domain = virt.lookup_uuid(src, plan.uuid)
    if domain is None:
        raise MigrationError(f"{plan.vm} is gone from {request.source}")
    if (now := virt.state(domain)) != "shut off":
        raise MigrationError(
            f"{plan.vm} is {now} on {request.source} again: its disks are changing, so "
            "the cold migration stops; shut it down and resume, or migrate it live"
        )


def _release(
    request: Request, plan: Plan, step: Step, previous: dict[str, Any], record: dict[str, Any]
) -> None:
    """The source lets the VM go: undefined (cold; live, libvirt did it), its disks
    deleted with --delete-source when they were copied."""
    if _done(previous, "release source"):
        return
    with step("release source") as detail, \
            virt.connection(request.source, request.connect_timeout) as src:  # fmt: skip
        domain = virt.lookup_uuid(src, plan.uuid)
        if domain is not None:
            if virt.state(domain) != "shut off":
                raise MigrationError(f"{plan.vm} runs on {request.source} again; left there")
            domains.release(domain)
            del domain
            if virt.lookup_uuid(src, plan.uuid) is not None:
                raise MigrationError(f"{request.source} still has {plan.vm} defined")
        detail["undefined"] = True
        deleted = []
        if request.delete_source:
            for disk in plan.copied:
                vol = storage.volume(storage.pool(src, disk.source_pool), disk.volume)
                if vol is not None:
                    storage.delete_volume(vol)
                    deleted.append(disk.path)
        detail["deleted"] = deleted
        record["source_deleted"] = deleted


def _bandwidth(journal: Journal, plan: Plan) -> int | None:
    """The memory bandwidth the last live migration between these two hosts reached."""
    for job in journal.jobs(200):
        result = job.result or {}
        if job.kind == KIND and job.state == "done" and result.get("bandwidth") and \
                result.get("source_host") == plan.source_host and \
                result.get("destination_host") == plan.destination_host:  # fmt: skip
            return int(result["bandwidth"])
    return None


def cancel(job_id: str, journal: Journal) -> str:
    """Stop a migration: what was done, in words. The process running it is asked to
    stop (it stops the migration and records the outcome); a live migration left
    running by a process that is gone is stopped at the source."""
    job = journal.get(job_id)
    if job.kind != KIND:
        raise InputError(f"job {job_id} is a {job.kind} job, not a migration")
    if job.status not in ("running", "interrupted"):
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
        if domain is None or not job.params.get("live") or not migration.job_running(domain):
            raise InputError(f"job {job_id} is interrupted and nothing of it runs: nothing "
                             "to cancel")  # fmt: skip
        migration.abort_job(domain)
        del domain
    return f"stopped the migration of {request.vm} at {request.source}; the guest stays there"


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
