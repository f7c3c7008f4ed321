"""A live migration, run by libvirt and steered by the convergence policy.

The source host's libvirt drives QEMU's migration: its storage mirror first (when the
disks go along, the guest's writes mirrored meanwhile), then pre-copy of memory in
passes, the pause for the last piece and the device state, the guest resumed on the
destination (which announces its MACs, so its network follows), and the source
released only then. We read the job every POLL_S, print progress, and act on what the
policy answers. Until post-copy begins an abort leaves the guest running on the
source, untouched; after that the destination holds the newest memory, so a failure
is recovered (post-copy resumed) instead.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

from p2v.errors import ComponentError, MigrationError
from p2v.host import virt
from p2v.host.virt import dirtyrate, domains, migration
from p2v.migrate.checks import Plan, Request
from p2v.migrate.policy import Limits, Policy, Prediction, Sample, predict
from p2v.migrate.progress import Progress
from p2v.units import format_size

POLL_S = 0.1  # a hot guest's passes take 0.1-0.2 s here
ABORT_WAIT_S = 60.0  # for libvirt to end an aborted migration
RECOVER_WAIT_S = 120.0


def limits(request: Request) -> Limits:
    return Limits(
        max_downtime_ms=request.max_downtime_ms, escalate=request.escalate,
        postcopy=request.postcopy and request.escalate,
        auto_converge=request.auto_converge and request.escalate, timeout_s=request.timeout,
    )  # fmt: skip


def expect(domain: Any, plan: Plan, request: Request, bandwidth: int | None) -> Prediction:
    """Measure how fast the guest dirties its memory, and what that means."""
    dirty = dirtyrate.dirty_rate(domain, 1) << 20  # QEMU's MB are MiB
    disks = sum(d.allocation for d in plan.copied)
    if request.bandwidth_mib:
        cap = request.bandwidth_mib << 20
        bandwidth = min(bandwidth, cap) if bandwidth else cap
    return predict(plan.memory, disks, dirty, bandwidth, limits(request))


def describe(prediction: Prediction) -> str:
    link = format_size(prediction.bandwidth) + "/s"
    link += "" if prediction.bandwidth_measured else " (assumed: no earlier migration measured it)"
    head = f"the guest dirties {format_size(prediction.dirty_rate)}/s; link {link}"
    if prediction.converges:
        worst = ""
        if prediction.worst_downtime_ms > 2 * prediction.downtime_ms:
            worst = (f"; up to {prediction.worst_downtime_ms:.0f} ms should it rewrite all of "
                     "that within a pass, and then the policy escalates")  # fmt: skip
        return (
            f"{head}: expect about {prediction.seconds:.1f} s, downtime about "
            f"{prediction.downtime_ms:.0f} ms ({prediction.plan}{worst})"
        )
    return f"{head}: {prediction.plan}"


def run(
    domain: Any,
    plan: Plan,
    request: Request,
    progress: Progress,
    say: Callable[[str], None],
    follow: bool = False,
) -> dict[str, Any]:
    """Migrate the running guest (`follow`: steer the migration libvirt runs already,
    which a process that is gone started); the record of it, whose "outcome" is done,
    cancelled, timed out, failed or post-copy failed."""
    rules = limits(request)
    settings = _settings(plan, request, rules.postcopy, domains.definition(domain))
    record, job = _attempt(domain, plan, request, settings, rules, progress, say, follow)
    if follow:
        return {**record, "followed": True}
    if job.error and rules.postcopy and not record["passes"] and _no_postcopy_there(job.error):
        # The destination's QEMU cannot take post-copy (no userfaultfd there): again
        # without it, before any memory moved.
        say(f"post-copy is not available ({job.error}); migrating without it")
        rules = dataclasses.replace(rules, postcopy=False)
        settings = dataclasses.replace(settings, postcopy=False)
        record, job = _attempt(domain, plan, request, settings, rules, progress, say)
        record["postcopy_unavailable"] = True
    return record


def settle(domain: Any, plan: Plan, request: Request, say: Callable[[str], None]) -> bool:
    """Before a resumed job goes on: a post-copy that broke off is resumed; True when
    the migration its last run left to libvirt (it goes on without us, peer to peer)
    still runs, to be followed and steered."""
    if migration.paused_reason(domain) == "post-copy failed":
        say(f"{plan.vm}'s post-copy broke off: resuming it")
        settings = _settings(plan, request, postcopy=True)
        if not migration.Migration(domain, settings).recover(RECOVER_WAIT_S):
            raise MigrationError(
                f"{plan.vm}'s post-copy could not be resumed; its memory is split between "
                f"{request.source} and {request.destination}: check that both answer, then "
                "resume again"
            )
        return False
    if migration.migrating_out(domain):
        say(f"the migration of {plan.vm} started before still runs: following it")
        return True
    return False


def _settings(
    plan: Plan, request: Request, postcopy: bool, persist_xml: str | None = None
) -> migration.MigrationSettings:
    """How libvirt is asked to move the guest, from the request and the plan."""
    return migration.MigrationSettings(
        dest_uri=request.destination, live=True,
        copy_disks=tuple(d.target for d in plan.copied), persist_xml=persist_xml,
        postcopy=postcopy, auto_converge=limits(request).auto_converge,
        bandwidth_mib=request.bandwidth_mib, tls=request.tls,
    )  # fmt: skip


def _no_postcopy_there(error: str) -> bool:
    return "postcopy" in error.lower().replace("-", "") or "userfault" in error.lower()


def _attempt(
    domain: Any,
    plan: Plan,
    request: Request,
    settings: migration.MigrationSettings,
    rules: Limits,
    progress: Progress,
    say: Callable[[str], None],
    follow: bool = False,
) -> tuple[dict[str, Any], migration.Migration]:
    policy = Policy(rules)
    job = migration.Migration(domain, settings)
    began = time.monotonic()
    if follow:
        job.follow()
    else:
        job.set_max_downtime(policy.downtime_ms)
        job.start()
    interrupted = False
    try:
        _watch(job, policy, progress, say, began)
    except BaseException as error:
        # Whatever stops us (Ctrl-C, a bug, a host that stops answering) must not leave
        # the migration running unwatched: it ends before we do.
        interrupted = isinstance(error, KeyboardInterrupt)
        if migration.in_postcopy(domain):
            say("post-copy has begun: the guest runs on the destination; finishing")
            job.wait()
        elif not job.done:
            say("stopping the migration; the guest stays on the source")
            job.abort()
            job.wait(ABORT_WAIT_S)
        if not interrupted and not job.done:
            raise
    finally:
        job.close()
    total = time.monotonic() - began
    record = {
        "mode": "live", "total_s": round(total, 2), "passes": policy.passes,
        "escalations": policy.escalations, "downtime_limit_ms": policy.downtime_ms,
        "postcopy": policy.postcopy, "storage_copied": [d.target for d in plan.copied],
    }  # fmt: skip
    if job.error is None and job.done:
        return {**record, "outcome": "done", **_completed(job, request, plan)}, job
    return _failure(job, policy, request, record, interrupted, say), job


def _watch(
    job: migration.Migration,
    policy: Policy,
    progress: Progress,
    say: Callable[[str], None],
    began: float,
) -> None:
    downtime_set = False
    while not job.wait(POLL_S):
        stats = job.stats()
        if not stats.running:
            continue
        if not downtime_set and stats.iteration:  # libvirt may reset it as the job starts
            _steer(job, lambda: job.set_max_downtime(policy.downtime_ms))
            downtime_set = True
        elapsed = time.monotonic() - began
        sample = Sample(elapsed, stats.iteration, stats.memory_remaining, stats.bandwidth,
                        stats.throttle)  # fmt: skip
        escalated = len(policy.escalations)
        for action in policy.observe(sample):
            if action.kind == "downtime":
                assert action.value is not None
                _steer(job, functools.partial(job.set_max_downtime, action.value))
            elif action.kind == "postcopy":
                _steer(job, job.start_postcopy)
            elif action.kind == "abort":
                say(f"stopping the migration: {action.reason}")
                job.abort()
        for step in policy.escalations[escalated:]:
            progress.event("escalation", **step)
        progress.update({
            "elapsed_s": round(elapsed, 2), "pass": stats.iteration,
            "memory_total": stats.memory_total, "memory_remaining": stats.memory_remaining,
            "disk_total": stats.disk_total, "disk_remaining": stats.disk_remaining,
            "processed": stats.processed, "dirty_rate": stats.dirty_rate,
            "bandwidth": stats.bandwidth, "throttle": stats.throttle,
            "downtime_limit_ms": policy.downtime_ms, "postcopy": policy.postcopy,
        })  # fmt: skip


def _steer(job: migration.Migration, call: Callable[[], None]) -> None:
    """A change to the running migration; one that ended meanwhile (finished, or
    stopped) refuses it, which is no failure of ours."""
    try:
        call()
    except ComponentError:
        if not job.wait(1.0):
            raise


def _completed(job: migration.Migration, request: Request, plan: Plan) -> dict[str, Any]:
    """What QEMU measured: from the source's job-completed event, else from the
    destination's record of the incoming migration."""
    raw = job.completed
    if not raw or "downtime" not in raw:
        with virt.connection(request.destination, request.connect_timeout) as dst:
            domain = virt.find(dst, plan.vm)
            raw = migration.completed_stats(domain) or raw or {}
    stats = migration.stats_from(raw, running=False)
    return {
        "downtime_ms": stats.downtime_ms, "bytes": stats.processed,
        "memory_bytes": stats.memory_processed, "disk_bytes": stats.disk_processed,
        "qemu_passes": stats.iteration or None, "bandwidth": stats.bandwidth,
        "postcopy_requests": stats.postcopy_requests, "qemu_elapsed_ms": stats.elapsed_ms,
    }  # fmt: skip


def _failure(
    job: migration.Migration,
    policy: Policy,
    request: Request,
    record: dict[str, Any],
    interrupted: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The record of a migration that did not finish: where the guest runs, recovered
    first where post-copy broke off. Its "message" says it for the user."""
    reason = job.error or "the migration did not end"
    if policy.postcopy and migration.in_postcopy(job.domain):
        say(f"post-copy broke off ({reason}); resuming it")
        if job.recover(RECOVER_WAIT_S):
            return {**record, "outcome": "done", "recovered_from": reason}
        where = _where(job.domain, request)
        message = (
            f"post-copy of {request.vm} failed ({reason}) and could not be resumed: the "
            f"newest memory is split between the hosts; the guest is {where}"
        )
        return {**record, "outcome": "post-copy failed", "error": reason, "guest": where,
                "message": message}  # fmt: skip
    where = _where(job.domain, request)
    if policy.gave_up:
        outcome, what = "timed out", f"stopped: {policy.gave_up}"
    elif interrupted or job.aborted or "cancel" in reason.lower():
        outcome, what = "cancelled", "was cancelled"
    else:
        outcome, what = "failed", f"failed: {reason}"
    return {**record, "outcome": outcome, "error": reason, "guest": where,
            "message": f"the migration of {request.vm} {what}; the guest is {where}"}  # fmt: skip


def _where(domain: Any, request: Request) -> str:
    try:
        now = virt.state(domain)
    except Exception:  # noqa: BLE001 - the source itself may be what failed
        return f"unknown: {request.source} does not answer"
    reason = migration.paused_reason(domain) if now == "paused" else None
    return f"{now} on {request.source}" + (f" ({reason})" if reason else "")
