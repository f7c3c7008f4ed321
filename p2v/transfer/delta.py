"""A copy into what an earlier copy left: which earlier copy its target still holds,
and the digests of the blocks it holds.

A copy job records each block's digest once the block is durable and, when it is
done, what tells whether its target changed since (endpoints.target_identity). A
later copy of the same source into the same target, while that identity holds, reads
and hashes every block as ever but writes only those whose digests differ.
"""

from __future__ import annotations

import logging

from p2v.jobs.journal import JobRecord, Journal
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, blockhash
from p2v.transfer.endpoints import target_identity

COPY = "copy"  # the kind of copy jobs (p2v.transfer.jobs.KIND)
# Copy jobs recorded before they named their digest used this one.
FIRST_DIGEST = "blockhash-sha256"

log = logging.getLogger(__name__)


def unchanged_copy(
    journal: Journal,
    source: str,
    target: str,
    output_format: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> JobRecord | None:
    """The newest finished copy of `source` into `target` (as spelt), when the target
    is still what it left: its identity now is the one the copy recorded, and it is
    read as the same format. None when there is none, or the target changed since
    (another copy into it, failed or not, changed it too), or nothing tells whether
    it did."""
    job = journal.last_done(COPY, {"request.source": source, "request.target": target})
    if job is None or job.params["request"].get("output_format") != output_format:
        return None
    then = (job.result or {}).get("target_identity")
    if not then or then != target_identity(target, connect_timeout):
        return None
    return job


def held_blocks(journal: Journal, job_id: str) -> dict[int, bytes] | None:
    """The block digests copy job `job_id` recorded; None when they do not tell what
    its target holds: the job is not a finished copy, or hashed with another digest."""
    job = journal.find(job_id)
    if job is None or job.kind != COPY or job.state != "done":
        why = "is not a finished copy"
    elif job.params.get("digest", FIRST_DIGEST) != blockhash.PREFIX:
        why = "was made by a p2v with another digest"
    else:
        return {index: d for index, d in journal.blocks(job_id).items() if d is not None}
    log.warning("job %s %s: its target is copied in full", job_id, why)
    return None
