import io
import json
import time

from p2v.transfer.progress import Counters, JsonReporter, Snapshot, TokenBucket


def test_the_token_bucket_holds_threads_to_the_rate():
    bucket = TokenBucket(1_000_000)
    started = time.monotonic()
    for _ in range(4):
        bucket.take(200_000)
    # The first take is free; the next three wait 0.2 s each.
    assert time.monotonic() - started >= 0.55


def test_snapshot_sums_threads_and_counts_resumed_work_as_done():
    a, b = Counters(), Counters()
    a.add(copied=10, zeroed=5)
    b.add(skipped=3, unchanged=4)
    b.retried = 2
    snap = Snapshot.of([a, b], total=100, resumed=20, elapsed=2.0)
    assert (snap.copied, snap.zeroed, snap.skipped, snap.unchanged, snap.retried) == (
        10, 5, 3, 4, 2
    )  # fmt: skip
    assert snap.done == 42
    assert snap.rate == 11.0  # resumed work is not counted in the rate


def test_json_progress_names_the_job_on_every_line():
    out = io.StringIO()
    reporter = JsonReporter(out, interval=0)
    reporter.start("copy-1", "a -> b", 100)
    reporter.update(Snapshot(total=100, copied=50, elapsed=1.0))
    reporter.close(Snapshot(total=100, copied=100, elapsed=2.0))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["start", "progress", "progress"]
    assert {e["job"] for e in events} == {"copy-1"}
    assert events[-1]["done"] == 100
