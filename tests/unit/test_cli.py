"""The command line takes options wherever they are put, as cp, rsync and virsh do."""

from __future__ import annotations

import argparse
import time

import pytest

from p2v.cli import VerbParser, build_parser
from p2v.commands.options import without_schedule_options


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["copy", "agent://h/sda", "--secret-file", "F", "disk.raw", "--bwlimit", "5M"],
        ["copy", "--secret-file", "F", "agent://h/sda", "disk.raw", "--bwlimit", "5M"],
        ["copy", "agent://h/sda", "disk.raw", "--bwlimit", "5M", "--secret-file", "F"],
        ["copy", "agent://h/sda", "--bwlimit", "5M", "disk.raw", "--secret-file", "F"],
    ],
)
def test_copy_takes_options_before_between_and_after_its_arguments(argv: list[str]) -> None:
    args = parse(*argv)
    assert (args.source, args.target) == ("agent://h/sda", "disk.raw")
    assert (args.secret_file, args.bwlimit) == ("F", 5 << 20)


def test_flags_between_arguments() -> None:
    args = parse("copy", "a.raw", "--json", "b.qcow2", "--verify")
    assert (args.source, args.target, args.json, args.verify) == ("a.raw", "b.qcow2", True, True)


def test_other_verbs_with_arguments() -> None:
    assert parse("checksum", "--json", "a.raw").source == "a.raw"
    assert parse("checksum", "a.raw", "--json").json
    args = parse("history", "--json", "copy-1234abcd", "--limit", "3")
    assert (args.job, args.json, args.limit) == ("copy-1234abcd", True, 3)


def test_debug_before_or_after_the_verb() -> None:
    assert parse("--debug", "history").debug
    assert parse("history", "--debug").debug
    assert parse("copy", "a", "--debug", "b").debug
    assert not parse("history").debug


def test_every_verb_takes_intermixed_options() -> None:
    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert verbs.choices and all(isinstance(p, VerbParser) for p in verbs.choices.values())


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse("copy", "a", "--no-such-option", "b")
    assert refused.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


def test_every_job_making_verb_takes_the_same_schedule_options() -> None:
    copy = parse("copy", "a", "--at", "14:30", "b", "--every", "1h")
    assert (copy.schedule_at, copy.schedule_every, copy.schedule_cron) == ("14:30", "1h", None)
    convert = parse("convert", "--disk", "a.img", "--cron", "0 2 * * *", "--output-dir", "o")
    assert convert.schedule_cron == "0 2 * * *"
    assert parse("copy", "a", "b").schedule_at is None


def test_a_scheduled_command_is_run_without_its_schedule_options() -> None:
    argv = ["a", "--at=14:30", "--bwlimit", "8M", "--every", "1h", "b", "--cron", "* * * * *"]
    assert without_schedule_options(argv) == ["a", "--bwlimit", "8M", "b"]


def test_a_repeated_copy_names_each_target_by_its_day_or_moment() -> None:
    from p2v.commands.transfer import dated

    now = time.mktime((2026, 12, 7, 4, 5, 6, 0, 0, -1))
    assert dated("/b/web-{date}.raw", now) == "/b/web-20261207.raw"
    assert dated("/b/web-{time}.qcow2", now) == "/b/web-20261207-040506.qcow2"
    assert dated("/b/web.raw", now) == "/b/web.raw"
