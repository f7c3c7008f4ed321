"""The convergence policy of a live migration: what to expect before it starts, and
when to escalate while it runs. Pure: it reads observations and answers with actions.

Pre-copy sends all memory once, then pass after pass what the guest dirtied
meanwhile, and stops the guest for the last piece once that fits in the downtime
limit. A guest that dirties memory about as fast as the link carries it never gets
there. The ladder, one rung per pass that did not shrink what is left (a stall):
the downtime limit doubles from a small start up to --max-downtime (as oVirt and
OpenStack raise it in steps); when post-copy is there to take over, only up to what a
post-copy switch costs the guest (POSTCOPY_PAUSE_MS), and only while what a pass
leaves could be sent within the raised limit, so that a guest is not paused longer
in vain; QEMU's auto-converge throttles the guest's vCPUs once the guest outruns the
link (it decides when; we record it); then post-copy, where the guest runs on the
destination at once and fetches the pages it still lacks. Without post-copy the
downtime rises to the maximum whatever a pass leaves, and the throttle keeps rising
until the passes shrink, or --timeout aborts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INITIAL_DOWNTIME_MS = 50  # the first limit: a guest that converges pauses no longer
STALL_SHRINK = 0.8  # a pass left more than this share of the previous pass's dirt: stalled
STALLS_BEFORE_POSTCOPY = 2  # stalled passes once the downtime rung is spent, then post-copy
# What switching to post-copy costs the guest here: a pause of ~10 ms, then page faults
# served over the link; a guest whose clients see a ~35 ms longer gap (measured
# under TCG with the hot test guest). The downtime is not raised past this while
# post-copy is allowed.
POSTCOPY_PAUSE_MS = 100
CONVERGES_BELOW = 0.8  # pre-copy converges when the guest dirties < this share of the link
ASSUMED_BANDWIDTH = 125_000_000  # bytes/s, a 1 Gbit/s link, when no migration measured one


@dataclass(frozen=True)
class Limits:
    max_downtime_ms: int = 300
    escalate: bool = True  # False: pre-copy at --max-downtime only, and nothing else
    postcopy: bool = True  # allowed, and both hosts can
    auto_converge: bool = True
    timeout_s: float | None = None  # abort pre-copy after this long

    @property
    def initial_downtime_ms(self) -> int:
        if not self.escalate:
            return self.max_downtime_ms
        return min(INITIAL_DOWNTIME_MS, self.max_downtime_ms)

    @property
    def downtime_ceiling_ms(self) -> int:
        """How far the downtime may rise: --max-downtime, or with post-copy to take
        over, what a post-copy switch costs the guest (a longer pause is in vain)."""
        if not self.postcopy:
            return self.max_downtime_ms
        return min(self.max_downtime_ms, max(POSTCOPY_PAUSE_MS, self.initial_downtime_ms))


@dataclass(frozen=True)
class Prediction:
    converges: bool  # by pre-copy alone
    seconds: float  # expected total, escalations included
    downtime_ms: float  # expected pause of the guest
    worst_downtime_ms: float  # should the guest rewrite its whole working set within a pass
    bandwidth: int  # bytes/s assumed
    bandwidth_measured: bool  # by an earlier migration between these hosts
    dirty_rate: int  # bytes/s, measured before the start
    plan: str  # what will be done, in words

    def to_json(self) -> dict[str, Any]:
        return {
            "converges": self.converges, "seconds": round(self.seconds, 2),
            "downtime_ms": round(self.downtime_ms),
            "worst_downtime_ms": round(self.worst_downtime_ms), "bandwidth": self.bandwidth,
            "bandwidth_measured": self.bandwidth_measured, "dirty_rate": self.dirty_rate,
            "plan": self.plan,
        }  # fmt: skip


def predict(
    memory: int, disks: int, dirty_rate: int, bandwidth: int | None, limits: Limits
) -> Prediction:
    """What to expect from migrating `memory` bytes of RAM (and `disks` bytes of
    storage, copied first) of a guest that dirties `dirty_rate` bytes/s, over a link
    of `bandwidth` bytes/s (None: not measured yet, 1 Gbit/s assumed)."""
    measured = bandwidth is not None and bandwidth > 0
    link = bandwidth if measured and bandwidth else ASSUMED_BANDWIDTH
    first = (memory + disks) / link
    ratio = dirty_rate / link
    # QEMU's sample counts a page once per second however often it is written: the
    # rate is also the working set, all of which a fast writer can dirty within a pass.
    worst = 1000 * min(memory, dirty_rate) / link
    if ratio < CONVERGES_BELOW:
        # Each pass sends what the previous one let the guest dirty: a geometric series,
        # until what is left fits in the first downtime limit.
        seconds, left, passes = first, min(memory, dirty_rate * first), 1
        budget = limits.initial_downtime_ms / 1000 * link
        while left > budget and passes < 30:
            seconds += left / link
            left, passes = min(memory, dirty_rate * left / link), passes + 1
        downtime = min(left / link * 1000, limits.initial_downtime_ms)
        plan = f"pre-copy converges in about {passes} passes"
        return Prediction(True, seconds, downtime, worst, link, measured, dirty_rate, plan)
    # Pass after pass stalls: each rung of the ladder costs a pass of the dirty set.
    steps = _ladder(limits)
    per_pass = min(memory, dirty_rate * first) / link
    seconds = first + per_pass * (len(steps) + STALLS_BEFORE_POSTCOPY)
    downtime = float(limits.max_downtime_ms)
    if not limits.escalate:
        plan = "pre-copy alone will not converge and escalation is off: it runs until --timeout"
    elif limits.postcopy:
        plan = (
            f"pre-copy alone will not converge: the downtime limit rises "
            f"({' -> '.join(str(s) for s in steps) or 'at its maximum'} ms) while that can help"
            + (", QEMU throttles the guest once it outruns the link" if limits.auto_converge
               else "")
            + ", then post-copy finishes it"
        )  # fmt: skip
    else:
        plan = (
            "pre-copy alone will not converge and post-copy is off: the downtime limit "
            f"rises to {limits.max_downtime_ms} ms"
            + (", then auto-converge throttles the guest until it does" if limits.auto_converge
               else "; it may never finish (--timeout ends it)")
        )  # fmt: skip
    return Prediction(False, seconds, downtime, worst, link, measured, dirty_rate, plan)


def _ladder(limits: Limits) -> list[int]:
    """The downtime limits after the first, doubling up to the ceiling."""
    ceiling = limits.downtime_ceiling_ms
    steps, now = [], limits.initial_downtime_ms
    while limits.escalate and now < ceiling:
        now = min(now * 2, ceiling)
        steps.append(now)
    return steps


@dataclass(frozen=True)
class Sample:
    """One reading of the running migration."""

    elapsed: float  # seconds since it started
    iteration: int  # passes over memory begun
    remaining: int  # memory bytes still to send
    bandwidth: int = 0  # bytes/s QEMU sends memory at (0: not known yet)
    throttle: int = 0  # auto-converge's throttle, percent
    postcopy: bool = False  # post-copy is running


@dataclass(frozen=True)
class Action:
    kind: str  # downtime, postcopy, abort
    value: int | None = None  # the new downtime limit, ms
    reason: str = ""


@dataclass
class Policy:
    """Follows the passes of one migration and escalates on stalls."""

    limits: Limits
    downtime_ms: int = 0
    escalations: list[dict[str, Any]] = field(default_factory=list)
    pass_starts: list[int] = field(default_factory=list)  # what was left as each pass began
    stalls_at_max: int = 0
    downtime_done: bool = False  # the downtime rung is spent
    postcopy: bool = False
    throttle: int = 0
    gave_up: str | None = None  # why the policy aborted the migration
    _iteration: int = 0

    def __post_init__(self) -> None:
        self.downtime_ms = self.downtime_ms or self.limits.initial_downtime_ms

    @property
    def passes(self) -> int:
        return self._iteration

    def observe(self, sample: Sample) -> list[Action]:
        if sample.throttle > self.throttle:
            if self.throttle == 0:
                self._record(sample.elapsed, "auto-converge", sample.throttle)
            self.throttle = sample.throttle
        if self.postcopy or sample.postcopy:
            self.postcopy = True
            return []  # nothing to steer, nothing to abort: the guest runs there now
        if self.gave_up:
            return []  # the abort is under way
        limit = self.limits.timeout_s
        if limit is not None and sample.elapsed > limit:
            self.gave_up = f"not finished within --timeout {limit:g} s"
            return [Action("abort", reason=self.gave_up)]
        if sample.iteration <= self._iteration:
            return []
        self._iteration = sample.iteration
        if sample.iteration < 2:  # the first pass sends everything: nothing to judge
            return []
        self.pass_starts.append(sample.remaining)
        if len(self.pass_starts) < 2 or not self.limits.escalate:
            return []
        before, now = self.pass_starts[-2], self.pass_starts[-1]
        if now <= STALL_SHRINK * before:
            return []
        return self._escalate(sample)

    def _escalate(self, sample: Sample) -> list[Action]:
        elapsed, ceiling = sample.elapsed, self.limits.downtime_ceiling_ms
        if not self.downtime_done and self.downtime_ms < ceiling:
            needed = 1000 * sample.remaining / sample.bandwidth if sample.bandwidth else 0
            if self.limits.postcopy and needed > ceiling:
                self.downtime_done = True
                self._record(elapsed, "downtime not raised", round(needed))
            else:
                self.downtime_ms = min(self.downtime_ms * 2, ceiling)
                self._record(elapsed, "downtime", self.downtime_ms)
                return [Action("downtime", self.downtime_ms, "a pass stalled")]
        self.downtime_done = True
        self.stalls_at_max += 1
        if self.limits.postcopy and self.stalls_at_max >= STALLS_BEFORE_POSTCOPY:
            self.postcopy = True
            self._record(elapsed, "post-copy", None)
            return [Action("postcopy", reason="pre-copy stalled, its other rungs spent")]
        return []

    def _record(self, elapsed: float, what: str, value: int | None) -> None:
        self.escalations.append({"at": round(elapsed, 2), "what": what, "value": value})
