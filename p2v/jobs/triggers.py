"""When a schedule runs: once at a time, every interval, or as a crontab line says.

Pure: every function is given the time it takes for now (and the time zone, local by
default), so it is tested without a clock. Crontab lines are APScheduler's: its
CronTrigger checks them and finds their next time, in the local time zone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from p2v.errors import InputError
from p2v.units import format_time

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
AT_EXAMPLES = "14:30 (the next one, local time), 2025-06-01T02:00, 2025-06-01 02:00+02:00"


@dataclass(frozen=True)
class Trigger:
    at: float | None = None  # the first run, in seconds since the epoch; alone, the only one
    every: float | None = None  # seconds from one run to the next, counted from `at`
    cron: str | None = None  # a crontab line of 5 fields, in local time
    # The time zone a crontab line was given in (its IANA name): its runs stay at their
    # hour wherever and whenever the scheduler runs. None: this machine's.
    zone: str | None = None

    def next_run(self, after: float, tz: tzinfo | None = None) -> float | None:
        """The first run strictly after `after`; None when none is left."""
        if self.cron is not None:
            return _next_cron(self.cron, after, tz or self._zone())
        assert self.at is not None
        if after < self.at:
            return self.at
        if self.every is None:
            return None
        return self.at + (math.floor((after - self.at) / self.every) + 1) * self.every

    def _zone(self) -> tzinfo:
        if self.zone:
            try:
                return ZoneInfo(self.zone)
            except (ZoneInfoNotFoundError, ValueError):
                pass  # a zone this machine does not know: its own
        return local_zone()

    def describe(self, tz: tzinfo | None = None) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}'" + (f" ({self.zone})" if self.zone else "")
        assert self.at is not None
        if self.every is None:
            return f"once at {format_time(self.at, tz)}"
        return f"every {interval_text(self.every)} from {format_time(self.at, tz)}"

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "every": self.every, "cron": self.cron, "zone": self.zone}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trigger:
        return cls(at=data.get("at"), every=data.get("every"), cron=data.get("cron"),
                   zone=data.get("zone"))  # fmt: skip


def _next_cron(line: str, after: float, zone: tzinfo) -> float | None:
    """The crontab line's first time strictly after `after`. Once per due time: in the
    hour the clocks go back, a time of day that comes twice runs at its first coming
    only (as cron does), unless the line runs every hour anyway."""
    trigger = _crontab(line, zone)
    every_hour = line.split()[1].split("/")[0] == "*"
    while True:
        # A step past `after` made in UTC: local arithmetic loses which of two equal
        # local times it is (fold), and would find the same run again and again.
        start = _local(after, zone, timedelta(microseconds=1))
        fire = trigger.get_next_fire_time(None, start)
        if fire is None:
            return None
        at = _local(fire.timestamp(), zone)
        if every_hour or not (at.fold and at.replace(fold=0).utcoffset() != at.utcoffset()):
            return float(fire.timestamp())
        after = fire.timestamp()  # the second coming of a time that ran already


def _local(when: float, zone: tzinfo, plus: timedelta = timedelta(0)) -> datetime:
    return (datetime.fromtimestamp(when, UTC) + plus).astimezone(zone)


def make(
    at: str | None, every: str | None, cron: str | None, now: float, tz: tzinfo | None = None
) -> Trigger:
    """The trigger that --at, --every and --cron ask for, or a clear InputError."""
    if every is not None and cron is not None:
        raise InputError("--every and --cron: give one of them")
    if at is not None and cron is not None:
        raise InputError("--at and --cron: give one of them (the crontab line says when)")
    if cron is not None:
        trigger = Trigger(cron=check_crontab(cron, tz), zone=_zone_name(tz))
        if trigger.next_run(now, tz) is None:
            raise InputError(f"--cron '{cron}' never comes")
        return trigger
    interval = parse_interval(every) if every is not None else None
    if at is not None:
        return Trigger(at=parse_at(at, now, tz), every=interval)
    assert interval is not None, "one of --at, --every and --cron"
    return Trigger(at=now + interval, every=interval)


def parse_at(text: str, now: float, tz: tzinfo | None = None) -> float:
    """--at: `HH:MM[:SS]`, the next such time today or tomorrow (local time), or an ISO
    8601 date and time (local time unless it names its offset), which must be ahead."""
    zone = tz or local_zone()
    clock = _CLOCK.fullmatch(text.strip())
    if clock:
        hour, minute, second = (int(g or 0) for g in clock.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise InputError(f"--at {text}: not a time of day (00:00 to 23:59)")
        today = datetime.fromtimestamp(now, zone)
        then = today.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if then.timestamp() <= now:
            then = (today + timedelta(days=1)).replace(
                hour=hour, minute=minute, second=second, microsecond=0
            )
        return then.timestamp()
    try:
        then = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--at {text}: not a time (examples: {AT_EXAMPLES})") from None
    if then.tzinfo is None:
        then = then.replace(tzinfo=zone)
    if then.timestamp() <= now:
        raise InputError(f"--at {text}: that time has passed (it is now {format_time(now, tz)})")
    return then.timestamp()


def parse_interval(text: str) -> float:
    """--every: a number and a unit, s, m, h or d (30s, 10m, 1.5h, 1d), of 1 s or more."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match:
        raise InputError(f"--every {text}: not an interval (examples: 30s, 10m, 1h, 1d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 1:
        raise InputError(f"--every {text}: an interval is 1 s or more")
    return seconds


def check_crontab(line: str, tz: tzinfo | None = None) -> str:
    """A crontab line that can be read, its fields separated by single spaces."""
    fields = " ".join(line.split())
    _crontab(fields, tz)
    return fields


def _crontab(line: str, tz: tzinfo | None) -> CronTrigger | OrTrigger:
    """The APScheduler trigger of a crontab line, as cron reads it. Two differences
    are made up for: APScheduler 3 counts weekdays from Monday (0) where cron counts
    from Sunday (0 and 7), so weekdays are given to it by name; and when both the
    day of the month and the weekday are restricted cron runs on either, where
    APScheduler wants both, so that case is two triggers, the first to come wins."""
    zone = tz or local_zone()
    fields = line.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields, not 5")
        minute, hour, day, month, weekday = fields
        names = weekdays(weekday)

        def cron(day: str, weekday: str) -> CronTrigger:
            return CronTrigger.from_crontab(f"{minute} {hour} {day} {month} {weekday}", zone)

        if day.startswith("*") or weekday.startswith("*"):
            return cron(day, names)
        return OrTrigger([cron(day, "*"), cron("*", names)])
    except ValueError as e:
        raise InputError(
            f"--cron '{line}': {e} (5 fields: minute hour day-of-month month day-of-week, "
            "e.g. '30 2 * * *')"
        ) from None


_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def weekdays(field: str) -> str:
    """cron's day-of-week field (0-7, Sunday 0 or 7, names, lists, ranges, steps) as
    a list of day names, or `*` for every day."""
    days: set[int] = set()
    for part in field.lower().split(","):
        match = re.fullmatch(r"(\*|\w+)(?:-(\w+))?(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"day of week {part!r} cannot be read")
        first, last, step = match.groups()
        if first == "*":
            if last:
                raise ValueError(f"day of week {part!r} cannot be read")
            low, high = 0, 6
        else:
            low = _weekday(first)
            high = _weekday(last) if last else (6 if step else low)
            if last and high == 0 and low > 0:
                high = 7  # fri-sun
        if high < low or (step is not None and int(step) == 0):
            raise ValueError(f"day of week {part!r} is an empty range")
        days.update(day % 7 for day in range(low, high + 1, int(step or 1)))
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text[:3] in _WEEKDAYS and len(text) == 3:
        return _WEEKDAYS.index(text)
    raise ValueError(f"{text!r} is not a day of the week (0-7 or sun-sat)")


def interval_text(seconds: float) -> str:
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _zone_name(tz: tzinfo | None) -> str | None:
    """The IANA name of `tz` (this machine's by default), None when it has none."""
    if tz is None:
        try:
            return str(tzlocal.get_localzone_name())
        except Exception:  # tzlocal cannot tell: the zone is left to each run
            return None
    return getattr(tz, "key", None)


def local_zone() -> tzinfo:
    return tzlocal.get_localzone()
