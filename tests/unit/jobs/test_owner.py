"""A job's process is known by boot id, pid and start time: real processes, no mocks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2v.jobs.owner import BOOT_ID_ENV, Owner, boot_id, parse_start, start_ticks, this_process


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_start_time_is_field_22_counted_after_the_command_name() -> None:
    # A command name may hold spaces and parentheses: "(a) (b c)" is one field.
    fields = " ".join(str(n) for n in range(3, 53))
    assert parse_start(f"4242 ((a) (b c)) {fields}") == 22
    assert parse_start(Path("/proc/self/stat").read_text()) == start_ticks(os.getpid())


def test_this_process_is_alive_and_a_process_that_ended_is_not() -> None:
    assert this_process().alive()
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert start_ticks(ended.pid) is None
    assert not Owner(boot_id(), ended.pid, 12345).alive()


def test_a_pid_taken_by_another_process_is_not_the_owner(
    sleeper: subprocess.Popen[bytes],
) -> None:
    start = start_ticks(sleeper.pid)
    assert start is not None
    assert Owner(boot_id(), sleeper.pid, start).alive()
    assert not Owner(boot_id(), sleeper.pid, start - 1).alive()


def test_after_a_reboot_no_process_of_the_last_boot_is_alive(
    sleeper: subprocess.Popen[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Owner(boot_id(), sleeper.pid, start_ticks(sleeper.pid))
    assert recorded.alive()
    rebooted = tmp_path / "boot_id"
    rebooted.write_text("7d2c3c4e-0000-4000-8000-000000000001\n")
    monkeypatch.setenv(BOOT_ID_ENV, str(rebooted))
    assert boot_id() == "7d2c3c4e-0000-4000-8000-000000000001"
    assert not recorded.alive()  # same pid, same start time, another boot


def test_an_owner_recorded_with_its_pid_alone_is_judged_by_it(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert Owner(None, sleeper.pid, None).alive()
    sleeper.kill()
    sleeper.wait()
    assert not Owner(None, sleeper.pid, None).alive()


def test_a_live_owner_says_since_when_it_runs() -> None:
    assert this_process().describe().startswith(f"process {os.getpid()} (running since 20")
    assert Owner("another boot", 4242, 10).describe() == "process 4242"
