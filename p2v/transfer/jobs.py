"""Copy jobs: open the endpoints, record the job, run the engine, verify, resume.

This is what `p2v copy` and `p2v checksum` call, and what the other pipelines
(convert, clone, migrate, backup) use to move a disk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import InputError, P2VError, TransferError
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.transfer import DEFAULT_CHECKPOINT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, blockhash
from p2v.transfer.delta import COPY, FIRST_DIGEST, held_blocks
from p2v.transfer.endpoints import (
    Endpoint,
    open_source,
    open_target,
    target_identity,
    target_key,
)
from p2v.transfer.endpoints.null import NullEndpoint
from p2v.transfer.engine import (
    DEFAULT_REQUESTS,
    Outcome,
    Settings,
    Transfer,
)
from p2v.transfer.progress import QuietReporter, Reporter
from p2v.transfer.worker import (
    Completion,
    PeerLost,
    PeerTimeout,
    SourceReadError,
    TargetWriteError,
)

REQUEST_VERSION = 1

log = logging.getLogger(__name__)


@dataclass
class CopyRequest:
    source: str
    target: str
    input_format: str | None = None
    output_format: str | None = None
    overwrite: bool = False
    dirty_bitmap: str | None = None
    rescue: bool = False
    verify: bool = False
    connections: int | None = None  # None: as suits the source (default_connections)
    requests: int = DEFAULT_REQUESTS
    bwlimit: int | None = None
    checkpoint: float = DEFAULT_CHECKPOINT  # seconds between durable checkpoints
    free: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) known free
    secret_file: str | None = None  # for an agent:// source: the file, never the secret
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # seconds for each stage of connecting
    io_timeout: float = DEFAULT_IO_TIMEOUT  # seconds without a reply from a side
    # An earlier copy job whose recorded block digests are what the target holds now
    # (the caller knows it unchanged since): the target is updated in place, and the
    # blocks that still have those digests are not written again.
    held_from: str | None = None

    def settings(self) -> Settings:
        return Settings(
            connections=self.connections,
            requests=self.requests,
            rescue=self.rescue,
            bwlimit=self.bwlimit,
            checkpoint_interval=self.checkpoint,
            io_timeout=self.io_timeout,
        )

    def to_json(self) -> dict[str, Any]:
        return {"version": REQUEST_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopyRequest:
        if data.get("version") != REQUEST_VERSION:
            raise InputError(f"copy request version {data.get('version')} is not supported")
        fields = {k: v for k, v in data.items() if k != "version"}
        fields["free"] = [tuple(r) for r in fields.get("free", [])]
        return cls(**fields)


@dataclass
class CopyResult:
    job_id: str
    source: str
    target: str
    size: int
    digest: str | None
    copied: int
    zeroed: int
    skipped: int
    resumed: int
    retried: int
    elapsed: float
    bad: list[tuple[int, int]]  # (offset, length) filled with zeros by --rescue
    verified: bool | None = None
    read: int = 0  # bytes read from the source; zeros known in advance are never read
    unchanged: int = 0  # read and found to be what the target held already: not written
    # What tells whether the target changed since the copy ended (endpoints.target_identity).
    target_identity: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    request = params.get("request", {})
    return f"{request.get('source')} -> {request.get('target')}"


def _outcome(result: dict[str, Any]) -> str | None:
    return str(result["digest"]) if result.get("digest") else None


KIND = Kind(COPY, _describe, _outcome)


def _quiet(_: str) -> None:
    """A copy's steps are not announced: its progress bar says it."""


def copy(
    request: CopyRequest,
    journal: Journal,
    reporter: Reporter | None = None,
    on_job: Callable[[str], None] | None = None,
    parent: str | None = None,
) -> CopyResult:
    """Copy as asked; `on_job` learns the job's id before any byte moves (a caller
    that records it can resume this copy after a crash); `parent`: the job this copy
    is part of (a conversion). The target is locked for the job: refused, before
    anything is opened, while another job writes it."""
    if request.held_from and not request.overwrite:
        raise InputError("held_from updates an existing target in place: it needs overwrite")
    lock = _target_lock(request)
    if lock is not None:
        journal.refuse_held(lock)
    source = _open_source(request)
    try:
        target, held = _open_copy_target(request, source.size, journal)
        if held is None:
            request = dataclasses.replace(request, held_from=None)  # the record says so
        try:
            params = {"request": request.to_json(), "size": source.size,
                      "digest": blockhash.PREFIX}  # fmt: skip
            run = Run.start(KIND, params, journal, _quiet, parent)
            if on_job:
                on_job(run.job_id)
            incremental = request.dirty_bitmap is not None
            target_zero = held is None and not incremental and target.known_zero()

            def drive() -> dict[str, Any]:
                if lock is not None:
                    run.lock(lock)
                result = _steps(run, request, source, target, reporter, {}, target_zero, held)
                target.close()
                return _identified(result, request)

            return CopyResult(**run.execute(drive))
        finally:
            target.close()
    finally:
        source.close()


def _open_copy_target(
    request: CopyRequest, size: int, journal: Journal
) -> tuple[Endpoint, dict[int, bytes] | None]:
    """The target, and the digests of the blocks it holds (request.held_from) when it
    is updated in place. When those digests cannot be trusted, or the target is not
    there or not the source's size, it is overwritten as if there were none: every
    block is then written, so nothing is lost but time."""
    held = held_blocks(journal, request.held_from) if request.held_from else None
    if held is not None:
        try:
            target = open_target(
                request.target, size, output_format=request.output_format, existing=True,
                connect_timeout=request.connect_timeout,
            )  # fmt: skip
        except InputError as e:
            log.warning("%s; copying all of it", e)
        else:
            if target.size == size:
                return target, held
            log.warning(
                "%s holds %d bytes, not the source's %d; copying all of it",
                target.name, target.size, size,
            )  # fmt: skip
            target.close()
    target = open_target(
        request.target,
        size,
        output_format=request.output_format,
        overwrite=request.overwrite,
        existing=request.dirty_bitmap is not None,
        connect_timeout=request.connect_timeout,
    )
    return target, None


def resume(
    job_id: str,
    journal: Journal,
    reporter: Reporter | None = None,
    bwlimit: int | None = None,
    *,
    connect_timeout: float | None = None,
    io_timeout: float | None = None,
) -> CopyResult:
    """Finish a failed or interrupted copy; `bwlimit` and the time limits
    (`connect_timeout`, `io_timeout`) may be set anew, the rest is the job's own. A
    copy that cannot start again fails, saying why, and stays to be resumed once the
    cause is gone."""
    run = Run.resume(KIND, job_id, journal, _quiet)
    request = CopyRequest.from_json(run.params["request"])
    if bwlimit is not None:
        request.bwlimit = bwlimit
    if connect_timeout is not None:
        request.connect_timeout = connect_timeout
    if io_timeout is not None:
        request.io_timeout = io_timeout
    return CopyResult(**run.execute(lambda: _resumed(run, request, reporter)))


def _resumed(run: Run, request: CopyRequest, reporter: Reporter | None) -> dict[str, Any]:
    if (lock := _target_lock(request)) is not None:
        run.lock(lock)
    with _open_source(request) as source:
        if source.size != run.params["size"]:
            raise InputError(
                f"source {source.name} is now {source.size} bytes, not "
                f"{run.params['size']} as when the job started; start a new copy"
            )
        with open_target(
            request.target, source.size, output_format=request.output_format, existing=True,
            connect_timeout=request.connect_timeout,
        ) as target:  # fmt: skip
            # Without the digests of request.held_from: what the stopped run wrote is no
            # longer what they describe, so the blocks left are written in full.
            done = run.journal.blocks(run.job_id)
            if run.params.get("digest", FIRST_DIGEST) != blockhash.PREFIX:
                # Its finished blocks carry digests of another algorithm, which cannot
                # be combined with this one's: copy them again.
                log.warning(
                    "%s was started by a p2v with another digest; copying all of it again",
                    run.job_id,
                )
                done = {}
            result = _steps(run, request, source, target, reporter, done, False)
    return _identified(result, request)


def _identified(result: dict[str, Any], request: CopyRequest) -> dict[str, Any]:
    """The result of a copy with what tells whether its target changed since, taken
    once the target is closed. Without it a later copy just sends everything again."""
    try:
        found = target_identity(request.target, request.connect_timeout)
    except (P2VError, OSError) as e:
        log.warning("cannot tell later whether %s changed since this copy: %s", request.target, e)
        found = None
    return {**result, "target_identity": found}


def go_on(
    job_id: str | None,
    journal: Journal,
    reporter: Reporter | None = None,
    bwlimit: int | None = None,
    *,
    connect_timeout: float | None = None,
    io_timeout: float | None = None,
) -> CopyResult | None:
    """The result of an earlier copy a multi-step job recorded (its child): finished,
    or resumed now; None when there is none to go on from (no job, or its source or
    target changed since), and the caller copies again."""
    if not job_id:
        return None
    job = journal.get(job_id)
    if job.state == "done" and job.result:
        return CopyResult(**job.result)
    try:
        return resume(
            job_id, journal, reporter, bwlimit, connect_timeout=connect_timeout,
            io_timeout=io_timeout,
        )  # fmt: skip
    except InputError:
        return None


def _target_lock(request: CopyRequest) -> Lock | None:
    key = target_key(request.target, request.connect_timeout)
    return Lock(key, f"target {request.target}") if key else None


def _steps(
    run: Run,
    request: CopyRequest,
    source: Endpoint,
    target: Endpoint,
    reporter: Reporter | None,
    done: dict[int, bytes | None],
    target_zero: bool,
    held: Mapping[int, bytes] | None = None,
) -> dict[str, Any]:
    """The copy, going on from the blocks `done` (every run: the journal keeps its
    progress block by block), then the read-back with --verify. `held`: digests of
    the blocks the target holds already."""
    reporter = reporter or QuietReporter()
    outcome: list[Outcome] = []

    def blocks() -> dict[str, Any]:
        outcome.append(_transfer(run, request, source, target, reporter, done, target_zero, held))
        return {"digest": outcome[0].digest}

    run(Step("copy", blocks, again=True))
    result = _result(run.job_id, source, target, outcome[0], run.journal.bad_ranges(run.job_id))
    if request.verify:

        def read_back() -> dict[str, Any]:
            expected = outcome[0].digest
            if expected is None:  # incremental: the whole source, not just what was dirty
                with _open_source(request, whole=True) as whole:
                    expected = endpoint_digest(whole)
            result.verified = verify(target, expected, source.size, request.io_timeout)
            if not result.verified:
                run.record = result.to_json()
                raise TransferError(f"verification failed: {target.name} does not hold "
                                    "what was read")  # fmt: skip
            return {"digest": expected}

        run(Step("verify", read_back, again=True))
    return result.to_json()


def _transfer(
    run: Run,
    request: CopyRequest,
    source: Endpoint,
    target: Endpoint,
    reporter: Reporter,
    done: dict[int, bytes | None],
    target_zero: bool,
    held: Mapping[int, bytes] | None,
) -> Outcome:
    reporter.start(run.job_id, f"{source.name} -> {target.name}", source.size)

    def record(batch: list[Completion]) -> None:
        run.journal.record_blocks(
            run.job_id,
            ((c.index, c.digest) for c in batch),
            ((lo, hi - lo) for c in batch for lo, hi in c.bad),
        )

    transfer = Transfer(
        source,
        target,
        settings=request.settings(),
        target_zero=target_zero,
        free=[(offset, offset + length) for offset, length in request.free],
        done=done,
        held=held,
        on_durable=record,
        reporter=reporter,
    )
    try:
        return transfer.run()
    except (SourceReadError, TargetWriteError, PeerTimeout, PeerLost, OSError) as e:
        raise TransferError(str(e), run.job_id) from e
    except KeyboardInterrupt:
        raise TransferError("interrupted", run.job_id) from None


def _open_source(request: CopyRequest, whole: bool = False) -> Endpoint:
    """The request's source; `whole` ignores its dirty bitmap."""
    return open_source(
        request.source,
        input_format=request.input_format,
        bitmap=None if whole else request.dirty_bitmap,
        secret_file=request.secret_file,
        connect_timeout=request.connect_timeout,
    )


def _result(
    job_id: str, source: Endpoint, target: Endpoint, outcome: Outcome, bad: list[tuple[int, int]]
) -> CopyResult:
    snap = outcome.snapshot
    return CopyResult(
        job_id=job_id,
        source=source.name,
        target=target.name,
        size=source.size,
        digest=outcome.digest,
        copied=snap.copied,
        zeroed=snap.zeroed,
        skipped=snap.skipped,
        resumed=snap.resumed,
        retried=snap.retried,
        read=snap.read,
        unchanged=snap.unchanged,
        elapsed=round(snap.elapsed, 3),
        bad=bad,
    )


def verify(
    target: Endpoint, expected: str, size: int, io_timeout: float = DEFAULT_IO_TIMEOUT
) -> bool:
    """Read the target back (not from the page cache) and compare digests."""
    target.forget_cache()
    settings = Settings(io_timeout=io_timeout)
    return endpoint_digest(target, size=size, settings=settings) == expected


def endpoint_digest(
    endpoint: Endpoint,
    *,
    size: int | None = None,
    settings: Settings | None = None,
    reporter: Reporter | None = None,
) -> str:
    """The block-hash digest of an endpoint's first `size` bytes (all by default)."""
    outcome = Transfer(
        endpoint,
        NullEndpoint(endpoint.size if size is None else size),
        size=size,
        settings=settings,
        target_zero=True,
        reporter=reporter,
    ).run()
    assert outcome.digest is not None
    return outcome.digest


def checksum(
    spec: str,
    *,
    input_format: str | None = None,
    secret_file: str | None = None,
    reporter: Reporter | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> tuple[str, int]:
    """(digest, size) of any source `p2v copy` accepts."""
    with open_source(
        spec, input_format=input_format, secret_file=secret_file, connect_timeout=connect_timeout
    ) as source:
        if reporter:
            reporter.start(None, f"checksum {source.name}", source.size)
        settings = Settings(io_timeout=io_timeout)
        return endpoint_digest(source, settings=settings, reporter=reporter), source.size
