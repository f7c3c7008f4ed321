"""Interrupted copies: kill -9 and a full disk, then `p2v copy --resume`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from p2v.errors import BusyError
from p2v.jobs import owner
from p2v.transfer import blockhash
from tests.conftest import require_root
from tests.integration.transfer.disks import (
    MiB,
    copy_json,
    data_blocks,
    digest,
    journal_blocks,
    make_disk,
    p2v,
    scattered,
)


def test_kill_9_then_resume_copies_only_what_was_not_durable(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    data = make_disk(source, 256 * MiB, scattered(256 * MiB, 48, 2 * MiB))
    before = (digest(source), os.stat(source).st_mtime)
    target = tmp_path / "target.qcow2"
    # 96 MiB of data at 8 MiB/s: checkpoints every 2 s come long before the end.
    argv = ["copy", "--json", "--bwlimit", "8M", "--checkpoint", "2", str(source), str(target)]
    copy = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", *argv], stdout=subprocess.PIPE, text=True
    )
    assert copy.stdout is not None
    job = json.loads(copy.stdout.readline())["job"]
    deadline = time.monotonic() + 60
    while data_blocks(job) < 4:  # some blocks durable, most still to do
        assert time.monotonic() < deadline and copy.poll() is None
        time.sleep(0.2)
    assert copy.poll() is None
    os.kill(copy.pid, signal.SIGKILL)
    copy.wait()
    durable = data_blocks(job)

    history = p2v("copy", "--resume", job, "--json", "--bwlimit", "10G", check=False)
    assert history.stdout, history.stderr
    done = json.loads(history.stdout.splitlines()[-1])
    assert done["event"] == "done", history.stderr
    assert done["digest"] == before[0]
    assert done["resumed"] >= durable * blockhash.BLOCK_SIZE
    assert done["copied"] <= data - durable * 2 * MiB  # each data block holds 2 MiB
    assert digest(target) == before[0]
    assert (digest(source), os.stat(source).st_mtime) == before
    again = p2v("copy", "--resume", job, check=False)
    assert again.returncode == 2 and "already done" in again.stderr


def slow_copy(
    source: Path, target: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """A `p2v copy` of `source` at 8 MiB/s, once some of its blocks are durable: the
    process and its job."""
    argv = ["copy", "--json", "--bwlimit", "8M", "--checkpoint", "1", str(source), str(target)]
    copy = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", *argv], stdout=subprocess.PIPE, text=True, env=env
    )
    assert copy.stdout is not None
    job = json.loads(copy.stdout.readline())["job"]
    deadline = time.monotonic() + 60
    while data_blocks(job) < 2:
        assert time.monotonic() < deadline and copy.poll() is None
        time.sleep(0.1)
    return copy, job


def stop_outside_a_transaction(proc: subprocess.Popen[str]) -> None:
    """SIGSTOP `proc` at a moment it does not hold the journal's write lock."""
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        while True:
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                journal.db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # stopped in the middle of a checkpoint
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.05)
                continue
            journal.db.execute("ROLLBACK")
            return
    finally:
        journal.close()


def test_after_a_power_cut_a_job_whose_pid_runs_again_is_resumed(tmp_path: Path) -> None:
    """After a reboot the pid a job recorded may belong to a process again, even with
    the same start time. A copy that keeps its pid and start time (stopped, not
    killed) stands for it: its job is refused to --resume on the same boot, and taken
    over once the boot id is another."""
    source = tmp_path / "source.raw"
    make_disk(source, 64 * MiB, scattered(64 * MiB, 16, 2 * MiB))  # 32 MiB of data
    before = digest(source)
    boot = tmp_path / "boot_id"
    boot.write_text("0b0e0b0e-0000-4000-8000-00000000000a\n")
    env = {**os.environ, owner.BOOT_ID_ENV: str(boot)}
    copy, job = slow_copy(source, tmp_path / "target.raw", env)
    try:
        stop_outside_a_transaction(copy)
        resume = ["copy", "--resume", job, "--json"]
        refused = p2v(*resume, check=False, env=env)
        assert refused.returncode == BusyError.exit_code, refused.stderr
        assert f"job {job} is still running in process {copy.pid} (running since" in (
            refused.stderr
        )
        boot.write_text("0b0e0b0e-0000-4000-8000-00000000000b\n")  # the host rebooted
        resumed = p2v(*resume, env=env)
        done = json.loads(resumed.stdout.splitlines()[-1])
        assert done["event"] == "done" and done["resumed"] > 0
        assert done["digest"] == before
        assert digest(tmp_path / "target.raw") == before
    finally:
        copy.kill()
        copy.wait()


def test_of_two_resumes_at_once_one_copies_and_the_other_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    make_disk(source, 64 * MiB, scattered(64 * MiB, 16, 2 * MiB))
    before = digest(source)
    copy, job = slow_copy(source, tmp_path / "target.raw")
    copy.kill()
    copy.wait()
    argv = [sys.executable, "-m", "p2v.cli", "copy", "--resume", job, "--json", "--bwlimit", "4M"]
    both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [proc.communicate(timeout=120) for proc in both]
    codes = sorted(proc.returncode for proc in both)
    assert codes == [0, BusyError.exit_code], outputs
    winner = next(i for i, proc in enumerate(both) if proc.returncode == 0)
    loser_stderr = outputs[1 - winner][1]
    assert f"job {job} is still running in process {both[winner].pid}" in loser_stderr
    done = json.loads(outputs[winner][0].splitlines()[-1])
    assert done["event"] == "done" and done["digest"] == before
    assert digest(tmp_path / "target.raw") == before


def test_a_target_being_written_is_locked_against_another_copy(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    make_disk(source, 64 * MiB, scattered(64 * MiB, 16, 2 * MiB))
    before = digest(source)
    target = tmp_path / "target.raw"
    copy, job = slow_copy(source, target)
    try:
        other = tmp_path / "other.raw"
        make_disk(other, 64 * MiB, [(0, MiB)], seed=9)
        # The same file by another spelling: refused before it is opened (an
        # --overwrite would have made it anew under the running copy).
        again = p2v("copy", str(other), f"{tmp_path}/./target.raw", "--overwrite", check=False)
        assert again.returncode == BusyError.exit_code, again.stderr
        assert f"target {tmp_path}/./target.raw is locked by job {job} (a copy job)" in (
            again.stderr
        )
        done = json.loads(copy.communicate(timeout=120)[0].splitlines()[-1])
        assert done["digest"] == before == digest(target)
    finally:
        copy.kill()
        copy.wait()
    # Its job ended: the target is free again.
    assert copy_json(str(source), str(target), "--overwrite")["digest"] == before


def test_a_copy_started_with_sigint_ignored_stops_on_sigint_resumably(tmp_path: Path) -> None:
    """Started in the background of a script, a process inherits SIGINT ignored; p2v
    takes it back, so a cancel or the scheduler's time limit still stops the job."""
    source = tmp_path / "source.raw"
    make_disk(source, 64 * MiB, scattered(64 * MiB, 16, 2 * MiB))
    argv = ["copy", "--json", "--bwlimit", "4M", str(source), str(tmp_path / "target.raw")]
    copy = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", *argv], stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert copy.stdout is not None
        job = json.loads(copy.stdout.readline())["job"]
        copy.send_signal(signal.SIGINT)
        copy.wait(30)
    finally:
        copy.kill()
        copy.wait()
    shown = json.loads(p2v("show", job, "--json").stdout)
    assert (shown["state"], shown["error"]) == ("failed", "interrupted")


@dataclass
class FullDisk:
    """A copy that failed on a full 20 MiB tmpfs: its source, job and target."""

    source_digest: str
    data: int
    failed: subprocess.CompletedProcess[str]
    job: str
    target: Path

    def make_room(self) -> None:
        subprocess.run(["mount", "-o", "remount,size=200M", str(self.target.parent)], check=True)


@contextlib.contextmanager
def copy_onto_a_full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    require_root("mounts a small tmpfs to fill up")
    source = tmp_path / "source.raw"
    data = make_disk(source, 128 * MiB, scattered(128 * MiB, 24, 2 * MiB))  # 48 MiB of data
    before = digest(source)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20M", "tmpfs", str(small)], check=True)
    try:
        target = small / "target.raw"
        failed = p2v("copy", str(source), str(target), check=False)
        job = failed.stderr.split("p2v copy --resume ")[1].split("`")[0]
        yield FullDisk(before, data, failed, job, target)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_a_full_disk_fails_the_job_and_resume_finishes_it(tmp_path: Path) -> None:
    with copy_onto_a_full_disk(tmp_path) as full:
        assert full.failed.returncode == 5
        assert "No space left on device" in full.failed.stderr
        full.make_room()
        done = copy_json("--resume", full.job)
        assert done["digest"] == full.source_digest
        assert digest(full.target) == full.source_digest


def test_a_job_recorded_with_another_digest_is_copied_again_in_full(tmp_path: Path) -> None:
    """Blocks finished by a p2v that used another digest algorithm cannot be combined
    with this one's digests: resuming such a job copies everything again."""
    with copy_onto_a_full_disk(tmp_path) as full:
        assert journal_blocks(full.job)  # blocks it finished (zero ones, at least)
        _as_recorded_by_an_older_p2v(full.job)
        full.make_room()
        resumed = p2v("copy", "--resume", full.job, "--json")
        done = json.loads(resumed.stdout.splitlines()[-1])
        assert "copying all of it again" in resumed.stderr
        assert done["digest"] == full.source_digest
        assert done["resumed"] == 0 and done["copied"] == full.data
        assert digest(full.target) == full.source_digest


def _as_recorded_by_an_older_p2v(job: str) -> None:
    """Drop the digest's name from the job and garble its blocks' digests."""
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        (params,) = journal.db.execute("SELECT params FROM jobs WHERE id = ?", (job,)).fetchone()
        params = json.loads(params)
        del params["digest"]
        journal.db.execute("UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(params), job))
        journal.db.execute("UPDATE job_blocks SET digest = ? WHERE job = ?", (bytes(32), job))
    finally:
        journal.close()
