"""`p2v migrate-process`: one running program (a process tree) moved from one Linux
machine to another over SSH with CRIU, as a job in the journal.

Steps: `check` (CRIU works on both sides, nothing the program holds is left behind,
the destination has its binaries and its PIDs free, room for the images), `prepare`
(the work directories and CRIU's hook on the source), with --live `pre-dump N`
passes (the memory copied while the program runs on, each pass only what changed),
then `move`: the final dump freezes it, its images and the open files the
destination lacks go over (digests checked), it is restored there, stopped, with its
TCP connections and the service address; then the source releases it (CRIU ends it
there) and it continues on the destination. `clean` removes the images.

A failure before the source releases it thaws it where it was, never kills it; so
does a p2v that dies (its SSH session ends: CRIU's hook reads no `go`). The freeze
is measured from the final dump's start to the program continuing on the
destination, and CRIU's own count of the source's frozen time is recorded beside it.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v.errors import ComponentError, InputError, MigrationError
from p2v.host import criu, ssh
from p2v.host.ssh import Peer, Shell
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.process import plan
from p2v.transfer import files

Say = Callable[[str], None]
PROBE = (Path(__file__).parent / "probe.py").read_text()
WORK_ROOT = "/var/tmp/p2v-process"
DEFAULT_TIMEOUT = 600.0  # each pass, copy or restore


@dataclass(frozen=True)
class Request:
    source: str  # ssh://...
    target: str
    pid: int | None = None
    unit: str | None = None
    live: bool = False
    keep_tcp: bool = False
    move_address: str | None = None  # ADDRESS/PREFIX
    ssh_config: str | None = None
    identity: str | None = None
    connect_timeout: float = ssh.DEFAULT_CONNECT_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def what(self) -> str:
        return f"unit {self.unit}" if self.unit else f"process {self.pid}"


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = Request(**params["request"])
    return f"{r.what} {r.source} -> {r.target} ({'live' if r.live else 'cold'})"


def workdir_of(job_id: str) -> str:
    """Where a move keeps its images, on both machines."""
    return f"{WORK_ROOT}/{job_id}"


def summary(result: dict[str, Any]) -> str:
    if result.get("continued_on_resume"):
        return (f"{result.get('what')} continued on {result.get('target')} (the source "
                "had released it)")  # fmt: skip
    passes = result.get("passes") or []
    return (
        f"{result.get('what')} moved {result.get('source')} -> {result.get('target')}: "
        f"frozen {result.get('freeze_ms')} ms (CRIU on the source: "
        f"{result.get('criu_frozen_ms')} ms), {len(passes)} pre-dump pass(es), "
        f"{result.get('bytes', 0) / plan.MiB:.1f} MiB moved"
    )


def _outcome(result: dict[str, Any]) -> str | None:
    return summary(result) if result.get("freeze_ms") is not None else None


KIND = Kind("migrate-process", _describe, _outcome)


@contextlib.contextmanager
def _shells(request: Request) -> Iterator[tuple[Shell, Shell]]:
    source, target = Peer.parse(request.source), Peer.parse(request.target)
    if source == target:
        raise InputError(f"--from and --to are both {source}")
    opts = (request.ssh_config, request.identity, request.connect_timeout)
    with ssh.shells((source, *opts), (target, *opts)) as (a, b):
        yield a, b


def run(request: Request, journal: Journal, say: Say) -> tuple[str, dict[str, Any]]:
    with _shells(request) as (a, b):
        checked = _check(a, b, request, say)
        journal.refuse_held(checked.lock)
        job = Run.start(KIND, {"request": request.to_json()}, journal, say)
        say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")
        return job.job_id, job.execute(lambda: _steps(job, a, b, request, checked))


def resume(job_id: str, journal: Journal, say: Say) -> tuple[str, dict[str, Any]]:
    """Go on with a move that stopped. A program the source had released is
    continued on the destination; else the move starts again from its checks (a
    frozen instant cannot be gone on with, and the program runs on the source)."""
    job = Run.resume(KIND, job_id, journal, say)
    request = Request(**job.params["request"])

    def drive() -> dict[str, Any]:
        with _shells(request) as (a, b):
            moving = job.earlier("move")
            workdir = workdir_of(job_id)
            done = {"what": request.what, "source": request.source, "target": request.target}
            if moving.get("continued"):  # moved; only its images were left
                job(Step("clean", lambda: _clean(a, b, workdir), again=True))
                return {**done, **moving}
            if moving.get("releasing") and _settle(job, a, b, request, moving):
                job(Step("clean", lambda: _clean(a, b, workdir), again=True))
                return {**done, "pids": moving["pids"], "continued_on_resume": True}
            return _steps(job, a, b, request, _check(a, b, request, say))

    return job_id, job.execute(drive)


@dataclass(frozen=True)
class Checked:
    source: plan.Source
    target: plan.Target
    address: plan.Address | None
    lock: Lock


def _check(a: Shell, b: Shell, request: Request, say: Say) -> Checked:
    """Everything refused before anything is frozen, all of it named at once."""
    src, dst = str(a.peer), str(b.peer)
    problems = [f"{src}: {p}" for p in criu.check(a, request.live)]
    problems += [f"{dst}: {p}" for p in criu.check(b, request.live)]
    if problems:
        raise InputError("CRIU cannot do this move:\n  " + "\n  ".join(problems))
    spec = f"unit:{request.unit}" if request.unit else str(request.pid)
    source = plan.Source.from_json(_probe(a, ["source", spec, WORK_ROOT], request))
    wanted = sorted({*source.binaries, *source.files})
    target = plan.Target.from_json(_probe(b, ["target", WORK_ROOT, *wanted], request))
    problems = plan.refusals(source, target, request.keep_tcp, src, dst)
    address = None
    if request.move_address:
        address, trouble = _address(a, b, request.move_address)
        problems += trouble
    if problems:
        raise InputError(f"{request.what} cannot be moved:\n  " + "\n  ".join(problems))
    say(f"{request.what}: {len(source.pids)} process(es), {source.rss / plan.MiB:.1f} MiB "
        f"resident, {len(plan.files_to_move(source, target))} open file(s) to bring")  # fmt: skip
    lock = Lock(f"process:{source.hostname}/{source.pid}", f"process {source.pid} on {src}")
    return Checked(source, target, address, lock)


def _probe(shell: Shell, args: list[str], request: Request) -> dict[str, Any]:
    out = shell.run(f"python3 - {shlex.join(args)}", request.timeout, stdin=PROBE.encode())
    try:
        return dict(json.loads(out))
    except ValueError:
        raise ComponentError(f"{shell.peer}: the probe said {out[-200:]!r}") from None


def _address(a: Shell, b: Shell, text: str) -> tuple[plan.Address | None, list[str]]:
    """Where the address is on the source (its interface and prefix), and the
    destination's interface toward it."""
    ip = str(plan.parse_address(text).ip)
    held = a.run(f"ip -o addr show to {shlex.quote(ip)}", 30).split()
    if len(held) < 4:
        return None, [f"{a.peer} does not hold the address {ip}"]
    dev, address = held[1], held[3]
    reached = a.run("echo $SSH_CONNECTION", 30).split()
    if len(reached) > 2 and reached[2] == ip:
        return None, [f"{a.peer} is reached at {ip} itself: moving it would cut this session"]
    if b.run(f"ip -o addr show to {shlex.quote(ip)}", 30).strip():
        return None, [f"{b.peer} holds the address {ip} already"]
    route = b.run(f"ip -o route get {shlex.quote(ip)}", 30).split()
    if "dev" not in route:
        return None, [f"{b.peer} has no route toward {ip}"]
    return plan.Address(address, dev, route[route.index("dev") + 1]), []


def _steps(job: Run, a: Shell, b: Shell, request: Request, checked: Checked) -> dict[str, Any]:
    source, target = checked.source, checked.target
    workdir = workdir_of(job.job_id)
    moving = plan.files_to_move(source, target)
    address = checked.address
    job.record = {"what": request.what, "source": str(a.peer), "target": str(b.peer),
                  "pid": source.pid, "pids": source.pids, "unit": source.unit,
                  "passes": [], "bytes": 0}  # fmt: skip

    def check() -> dict[str, Any]:
        job.lock(checked.lock)
        return {"pid": source.pid, "pids": source.pids, "unit": source.unit, "rss": source.rss,
                "files": moving, "address": address.to_json() if address else None}  # fmt: skip

    job(Step("check", check, again=True))

    def prepare() -> dict[str, Any]:
        env = {"ADDRESS": address.address if address else "",
               "SOURCE_DEV": address.source_dev if address else "",
               "UNIT": source.unit or ""}  # fmt: skip
        criu.install(a, workdir, env, moving)
        b.run(f"rm -rf {shlex.quote(workdir)} && mkdir -p {shlex.quote(workdir)}", 60)
        return {"workdir": workdir}

    job(Step("prepare", prepare, again=True))
    try:
        prev = _passes(job, a, b, workdir, request, checked)
        moved = job(Step("move", lambda: _move(job, a, b, workdir, request, checked, moving,
                                               prev), again=True))  # fmt: skip
    except BaseException:
        # The program runs on at the source: its images are of no use on either side.
        for shell in (a, b):
            shell.attempt(f"rm -rf {shlex.quote(workdir)}", 60)
        raise
    kept = ("freeze_ms", "criu_frozen_ms", "restore_ms", "files", "address", "marks")
    job.record.update({k: moved[k] for k in kept if k in moved})
    job.record["bytes"] += moved.get("bytes", 0)
    job(Step("clean", lambda: _clean(a, b, workdir), again=True))
    return job.record


def _passes(job: Run, a: Shell, b: Shell, workdir: str, request: Request,
            checked: Checked) -> str | None:  # fmt: skip
    """With --live, the pre-dump passes: the name of the last one (None: cold)."""
    if not request.live:
        return None
    prev = None
    pages: list[int] = []
    while not pages or plan.another_pass(pages):
        name = str(len(pages) + 1)

        def one(n: str = name, p: str | None = prev) -> dict[str, Any]:
            return _pass(a, b, workdir, checked.source.pid, n, p, request)

        detail = job(Step(f"pre-dump {name}", one, again=True))
        pages.append(detail["pages"])
        job.record["passes"].append(detail)
        job.record["bytes"] += detail["bytes"]
        prev = name
    return prev


def _pass(a: Shell, b: Shell, workdir: str, pid: int, name: str, prev: str | None,
          request: Request) -> dict[str, Any]:  # fmt: skip
    done = criu.pre_dump(a, workdir, pid, name, prev, request.timeout)
    sent = files.move(a, b, workdir, [name], request.timeout)
    return {"pages": done.pages, "frozen_ms": round(done.frozen_ms, 1),
            "dump_s": round(done.seconds, 2), "bytes": sent.bytes,
            "copy_s": round(sent.seconds, 2)}  # fmt: skip


def _move(job: Run, a: Shell, b: Shell, workdir: str, request: Request, checked: Checked,
          moving: list[str], prev: str | None) -> dict[str, Any]:  # fmt: skip
    source, address = checked.source, checked.address
    ip, dev = (address.address, address.target_dev) if address else (None, None)
    dump = criu.FinalDump(a, workdir, source.pid, prev, request.keep_tcp)
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - dump.started, 3)

    restoring = False
    try:
        images = dump.dumped(request.timeout)
        mark("dumped_s")
        restore = criu.restore_script(workdir, request.keep_tcp, ip, dev, source.tids, moving)
        restoring = True
        pipe = subprocess.PIPE
        code = b.popen(restore, stdin=pipe, stdout=pipe, stderr=pipe)
        try:
            out, err = code.communicate(images, timeout=criu.RESTORE_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            code.kill()
            out, err = b"", f"no answer in {criu.RESTORE_TIMEOUT_S + 30} s".encode()
        if code.returncode != 0 or b"P2V-RESTORED" not in out:
            why = err.decode(errors="replace").strip().splitlines()
            raise MigrationError(f"{b.peer}: the restore failed ({why[-1] if why else 'no reason'}"
                                 f"); {request.what} runs on {a.peer} as before")  # fmt: skip
        mark("restored_s")
        # From here the source may end it: a resume finds out which side has it.
        job.remember(releasing=True, pids=source.pids, start=source.start,
                     address=address.to_json() if address else None)  # fmt: skip
        status = dump.decide(True, request.timeout)
        mark("released_s")
    except BaseException:
        # Whatever the restore made there goes (its IDs were free just before it),
        # then the session closes: the hook reads no `go` and CRIU thaws the program
        # on the source, giving it its address back.
        if restoring:
            b.attempt(criu.discard_script(workdir, source.pids, ip, dev), 60)
        dump.abandon()
        raise
    if status != 0 and criu.alive(a, source.pid, source.start):
        # The hook did not take the `go` (its time ran out): thawed on the source.
        b.attempt(criu.discard_script(workdir, source.pids, ip, dev), 60)
        raise MigrationError(f"{a.peer}: the release did not happen (CRIU's status {status}); "
                             f"{request.what} runs on {a.peer} as before")  # fmt: skip
    job.remember(released=True)
    b.run(criu.continue_script(source.pids, ip, dev), 60)
    freeze_ms = round((time.monotonic() - dump.started) * 1000)
    mark("continued_s")
    job.remember(continued=True)
    frozen = criu.stats(a, f"{workdir}/final/stats-dump")
    restored = criu.stats(b, f"{workdir}/final/stats-restore")
    job.say(f"{request.what} runs on {b.peer}: frozen {freeze_ms} ms")
    return {
        "released": True,
        "continued": True,
        "freeze_ms": freeze_ms,
        "criu_frozen_ms": round(frozen.get("frozen_time", 0) / 1000) if frozen else None,
        "restore_ms": round(restored.get("restore_time", 0) / 1000) if restored else None,
        "bytes": len(images),
        "files": moving,
        "address": address.to_json() if address else None,
        "marks": marks,
    }


def _settle(job: Run, a: Shell, b: Shell, request: Request, moving: dict[str, Any]) -> bool:
    """After a run that stopped while the source was releasing the program: which
    side has it. Still on the source (thawed there): the stopped copy on the
    destination goes, and False. Ended there: it continues on the destination, True."""
    address = moving.get("address") or {}
    ip, dev = address.get("address"), address.get("target_dev")
    pid = moving["pids"][0]
    if criu.alive(a, pid, moving["start"]):
        b.attempt(criu.discard_script(workdir_of(job.job_id), moving["pids"], ip, dev), 60)
        return False
    b.run(criu.continue_script(moving["pids"], ip, dev), 60)
    job.say(f"{request.what} continued on {b.peer}")
    return True


def _clean(a: Shell, b: Shell, workdir: str) -> dict[str, Any]:
    for shell in (a, b):
        shell.run(f"rm -rf {shlex.quote(workdir)}", 120)
    return {}
