"""When schedules run: --at, --every and --cron, against fixed clocks and zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from p2v.errors import InputError
from p2v.jobs.triggers import Trigger, make, parse_at, parse_interval, weekdays

PARIS = ZoneInfo("Europe/Paris")


def t(text: str) -> float:
    """Seconds since the epoch of a local time in Paris."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).timestamp()


NOW = t("2025-06-04 13:20:30")  # a Wednesday


def test_a_time_of_day_is_the_next_one_today_or_tomorrow() -> None:
    assert parse_at("14:30", NOW, PARIS) == t("2025-06-04 14:30")
    assert parse_at("13:20", NOW, PARIS) == t("2025-06-05 13:20")  # passed by 30 s
    assert parse_at("9:05:07", NOW, PARIS) == t("2025-06-05 09:05:07")


def test_a_time_of_day_across_a_change_to_summer_time_keeps_the_clock() -> None:
    before = t("2025-03-29 23:00")  # the clocks go forward in the night
    assert parse_at("22:00", before, PARIS) == t("2025-03-30 22:00")
    assert parse_at("22:00", before, PARIS) - before == 22 * 3600  # 23 h of day, not 24


def test_an_iso_time_is_local_unless_it_names_its_offset() -> None:
    assert parse_at("2025-06-04T14:00", NOW, PARIS) == t("2025-06-04 14:00")
    assert parse_at("2025-06-04 12:30Z", NOW, PARIS) == t("2025-06-04 14:30")
    assert parse_at("2025-06-05", NOW, PARIS) == t("2025-06-05 00:00")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2025-06-04T13:00", "that time has passed (it is now 2025-06-04 13:20:30)"),
        ("25:00", "not a time of day"),
        ("tomorrow", "not a time (examples: 14:30"),
        ("2025-13-01T00:00", "not a time (examples"),
    ],
)
def test_a_bad_or_past_time_is_refused(text: str, says: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_at(text, NOW, PARIS)
    assert str(refused.value).startswith(f"--at {text}: {says}")


def test_intervals() -> None:
    assert [parse_interval(x) for x in ("30s", "10m", "1h", "1d", "1.5h")] == [
        30, 600, 3600, 86400, 5400
    ]  # fmt: skip
    for bad in ("10", "10x", "-1m", "0s", "0.5s", "m"):
        with pytest.raises(InputError, match=f"--every {bad}: "):
            parse_interval(bad)


def test_a_one_off_runs_once() -> None:
    trigger = make("14:30", None, None, NOW, PARIS)
    assert trigger == Trigger(at=t("2025-06-04 14:30"))
    assert trigger.next_run(NOW) == t("2025-06-04 14:30")
    assert trigger.next_run(t("2025-06-04 14:30")) is None
    assert trigger.describe(PARIS) == "once at 2025-06-04 14:30:00"


def test_every_interval_counts_from_the_first_run_and_skips_what_passed() -> None:
    trigger = make(None, "10m", None, NOW, PARIS)
    assert trigger == Trigger(at=NOW + 600, every=600)
    assert trigger.next_run(NOW) == NOW + 600
    assert trigger.next_run(NOW + 600) == NOW + 1200  # strictly after
    assert trigger.next_run(NOW + 3 * 600 + 5) == NOW + 4 * 600  # runs missed are not owed
    from_at = make("2025-06-04T15:00", "1d", None, NOW, PARIS)
    assert from_at.next_run(t("2025-06-05 09:00")) == t("2025-06-05 15:00")
    assert from_at.describe(PARIS) == "every 1d from 2025-06-04 15:00:00"


def test_cron_lines_read_as_cron_reads_them() -> None:
    def runs(line: str, count: int = 3) -> list[str]:
        trigger, after, found = make(None, None, line, NOW, PARIS), NOW, []
        for _ in range(count):
            after = trigger.next_run(after, PARIS)
            found.append(datetime.fromtimestamp(after, PARIS).strftime("%a %d %H:%M"))
        return found

    assert runs("*/15 * * * *") == ["Wed 04 13:30", "Wed 04 13:45", "Wed 04 14:00"]
    assert runs("30 2 * * *") == ["Thu 05 02:30", "Fri 06 02:30", "Sat 07 02:30"]
    assert runs("0 0 * * 0") == ["Sun 08 00:00", "Sun 15 00:00", "Sun 22 00:00"]  # 0: Sunday
    assert runs("0 0 * * 7", 1) == ["Sun 08 00:00"]
    assert runs("0 9 * * 1-5", 4) == ["Thu 05 09:00", "Fri 06 09:00", "Mon 09 09:00",
                                      "Tue 10 09:00"]  # fmt: skip
    # Day of month and weekday both given: either one (the 10th, and Sundays).
    assert runs("0 0 10 * sun") == ["Sun 08 00:00", "Tue 10 00:00", "Sun 15 00:00"]
    assert make(None, None, "  0   0 * * *", NOW, PARIS).cron == "0 0 * * *"


@pytest.mark.parametrize(
    ("line", "start", "expected"),
    [
        # Clocks go back at 03:00 on 25 October 2026: 02:00-02:59 comes twice.
        ("30 2 * * *", "2026-10-24 12:00", ["25 02:30+0200", "26 02:30+0100", "27 02:30+0100"]),
        (
            "*/30 * * * *",
            "2026-10-25 01:50",  # every half hour, in real time
            ["25 02:00+0200", "25 02:30+0200", "25 02:00+0100", "25 02:30+0100", "25 03:00+0100"],
        ),
        # Clocks go forward at 02:00 on 29 March 2026: 02:30 does not happen; once, later.
        ("30 2 * * *", "2026-03-28 12:00", ["29 03:30+0200", "30 02:30+0200"]),
        ("0 * * * *", "2026-03-29 00:30", ["29 01:00+0100", "29 03:00+0200", "29 04:00+0200"]),
    ],
)
def test_a_cron_line_runs_once_per_due_time_across_both_dst_changes(
    line: str, start: str, expected: list[str]
) -> None:
    trigger, after, found = make(None, None, line, t(start), PARIS), t(start), []
    for _ in expected:
        after = trigger.next_run(after, PARIS)
        found.append(datetime.fromtimestamp(after, PARIS).strftime("%d %H:%M%z"))
    assert found == expected


def test_weekdays_become_names() -> None:
    assert weekdays("*") == weekdays("0-6") == weekdays("*/1") == "*"
    assert weekdays("*/2") == "sun,tue,thu,sat"
    assert weekdays("5-7") == weekdays("fri-sun") == "sun,fri,sat"
    assert weekdays("1-5/2,0") == "sun,mon,wed,fri"


@pytest.mark.parametrize(
    ("at", "every", "cron", "says"),
    [
        (None, "1h", "* * * * *", "--every and --cron: give one of them"),
        ("14:00", None, "* * * * *", "--at and --cron: give one of them"),
        (None, None, "* * *", "--cron '* * *': 3 fields, not 5"),
        (None, None, "61 * * * *", "--cron '61 * * * *': Error validating"),
        (None, None, "0 0 * * 8", "'8' is not a day of the week"),
        (None, None, "0 0 31 2 *", "never comes"),
        (None, "soon", None, "--every soon: not an interval"),
    ],
)
def test_what_cannot_be_scheduled_is_refused(
    at: str | None, every: str | None, cron: str | None, says: str
) -> None:
    with pytest.raises(InputError) as refused:
        make(at, every, cron, NOW, PARIS)
    assert says in str(refused.value)


def test_a_trigger_is_recorded_and_read_back() -> None:
    for trigger in (Trigger(at=NOW), Trigger(at=NOW, every=60), Trigger(cron="0 0 * * *")):
        assert Trigger.from_json(trigger.to_json()) == trigger


def test_a_cron_line_keeps_the_zone_it_was_given_in() -> None:
    trigger = make(None, None, "30 2 * * *", NOW, PARIS)
    assert trigger.zone == "Europe/Paris" and "(Europe/Paris)" in trigger.describe()
    kept = Trigger.from_json(trigger.to_json())
    # Read where another zone is local: still 02:30 in Paris.
    first = kept.next_run(NOW)
    assert first is not None
    assert datetime.fromtimestamp(first, PARIS).strftime("%H:%M") == "02:30"
