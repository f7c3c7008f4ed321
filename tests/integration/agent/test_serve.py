"""`p2v-agent serve` on loopback: only the holder of the secret reads, nobody writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import nbd
import pytest

from agent.protocol import generate_secret
from tests.conftest import free_port
from tests.integration.agent.servers import Server
from tests.integration.transfer.disks import digest, p2v

# Free when the tests start (not a fixed number another program may hold); each test
# starts and stops its own agent on it.
PORT = free_port()


@contextmanager
def serving(*args: str, port: int = PORT) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`p2v-agent serve` in the background; yields it and the lines it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--listen", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"agent stopped: {proc.stderr.read() if proc.stderr else ''}")
            lines.append(line.rstrip())
            if line.startswith("secret fingerprint") and "--secret-file" in args:
                break
            if line.startswith("secret:"):
                break
        yield proc, lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def secret_file(tmp_path: Path, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(generate_secret() + "\n")
    path.chmod(0o600)
    return path


def read_only_flag(device: str) -> str:
    return subprocess.run(
        ["blockdev", "--getro", device], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_right_secret_reads_the_disk_exactly(server: Server, tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    disk = Path(server.gpt).name
    before = digest(server.gpt)
    with serving("--secret-file", str(key), "--disk", disk) as (proc, lines):
        assert f"exports: inventory, {disk}" in lines
        assert read_only_flag(server.gpt) == "1"  # the kernel refuses writes while served
        url = f"agent://127.0.0.1:{PORT}/{disk}"
        assert digest_of(url, key) == before
        out = tmp_path / "copy.raw"
        done = p2v("copy", url, str(out), "--secret-file", str(key))
        assert f"digest {before}" in done.stdout and digest(out) == before
        shown = p2v("inventory", "--agent", f"127.0.0.1:{PORT}", "--secret-file", str(key))
        assert f"lvm       {server.vg}" in shown.stdout
        # The secret is nowhere in the process list.
        secret_hex = key.read_text().strip().replace("-", "")
        assert not any(secret_hex in cmd or key.read_text().strip() in cmd for cmd in commands())
    assert read_only_flag(server.gpt) == "0"  # restored when the agent stops
    assert digest(server.gpt) == before


def digest_of(url: str, key: Path) -> str:
    return p2v("checksum", url, "--secret-file", str(key)).stdout.split()[0]


def commands() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with suppress(OSError):
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_wrong_missing_or_no_tls_is_refused(server: Server, tmp_path: Path) -> None:
    key, wrong = secret_file(tmp_path), secret_file(tmp_path, "wrong")
    disk = Path(server.mbr).name
    with serving("--secret-file", str(key), "--disk", disk) as (proc, _):
        url = f"agent://127.0.0.1:{PORT}/{disk}"
        refused = p2v("checksum", url, "--secret-file", str(wrong), check=False)
        assert refused.returncode == 6 and "refused the secret" in refused.stderr
        missing = p2v("checksum", url, check=False)
        assert missing.returncode == 2 and "--secret-file" in missing.stderr
        # A plain NBD client (no TLS) gets nothing either.
        h = nbd.NBD()
        h.set_export_name(disk)
        with pytest.raises(nbd.Error):
            h.connect_tcp("127.0.0.1", str(PORT))
        unknown = p2v("checksum", f"agent://127.0.0.1:{PORT}/sdzz", "--secret-file", str(key),
                      check=False)  # fmt: skip
        assert unknown.returncode == 6 and "does not export a disk named 'sdzz'" in unknown.stderr
    _, err = proc.communicate()
    assert "TLS handshake failed" in err


def test_writes_are_refused_by_the_server(server: Server, tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    disk = Path(server.mbr).name
    before = digest(server.mbr)
    psk = tmp_path / "psk"
    psk.write_text(f"p2v:{key.read_text().strip().replace('-', '')}\n")
    with serving("--secret-file", str(key), "--disk", disk):
        h = nbd.NBD()
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(str(psk))
        h.set_tls_username("p2v")
        h.set_export_name(disk)
        h.connect_tcp("127.0.0.1", str(PORT))
        assert h.is_read_only()
        h.set_strict_mode(0)  # send the write anyway: the server itself must refuse it
        with pytest.raises(nbd.Error) as refused:
            h.pwrite(b"\xff" * 4096, 0)
        # "command failed": the server answered the write with an error. Or it dropped
        # the connection: nbdkit 1.32 skips a refused write's payload by reading the
        # raw socket, past TLS, which can break the session before its reply is out.
        assert "command failed" in refused.value.string
        assert refused.value.errno in ("EPERM", "EROFS", "ENOTCONN")
        with suppress(nbd.Error):
            h.shutdown()
        target = p2v("copy", "null:1M", f"agent://127.0.0.1:{PORT}/{disk}", check=False)
        assert target.returncode == 2 and "read-only" in target.stderr
    assert digest(server.mbr) == before


def test_generated_secret_is_shown_on_the_console_only(server: Server, tmp_path: Path) -> None:
    disk = Path(server.mbr).name
    with serving("--disk", disk) as (_, lines):
        shown = [line for line in lines if line.startswith("secret:")]
        assert len(shown) == 1
        secret = shown[0].split(":", 1)[1].strip()
        assert re.fullmatch(r"([0-9a-f]{4}-){7}[0-9a-f]{4}", secret)
        key = tmp_path / "typed"
        key.write_text(secret.upper() + "\n")  # as an operator might type it
        assert digest_of(f"agent://127.0.0.1:{PORT}/{disk}", key) == digest(server.mbr)
        assert not any(secret.replace("-", "") in cmd for cmd in commands())


def test_unreachable_agent_and_other_schema(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    gone = p2v("inventory", "--agent", "127.0.0.1:18451", "--secret-file", str(key), check=False)
    assert gone.returncode == 6 and "cannot reach the agent" in gone.stderr
    # A server that speaks a future schema: nbdkit serving a newer inventory record.
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "inventory").write_text('{"schema_version": 99}')
    psk = tmp_path / "psk"
    psk.write_text(f"p2v:{key.read_text().strip().replace('-', '')}\n")
    future = subprocess.Popen(
        ["nbdkit", "-f", "-r", "--tls=require", f"--tls-psk={psk}", "-i", "127.0.0.1",
         "-p", "18452", f"--pidfile={tmp_path / 'pid'}", "file", f"dir={exports}"]
    )  # fmt: skip
    try:
        while not (tmp_path / "pid").exists():
            time.sleep(0.05)
        done = p2v(
            "inventory", "--agent", "127.0.0.1:18452", "--secret-file", str(key), check=False
        )
        assert done.returncode == 6 and "schema version 99 is not supported" in done.stderr
    finally:
        future.terminate()
        future.wait()


def test_zeros_found_by_the_agent_do_not_cross_the_network(tmp_path: Path) -> None:
    """A blank disk, and one with a little data: the agent scans them once and says
    where the zeros are; a copy reads only the rest, and ends with the disk's digest."""
    from agent.protocol import Address
    from p2v.host.agentclient import AgentSession
    from tests.conftest import attach_loop
    from tests.integration.transfer.disks import copy_json, make_disk, scattered

    size = 1 << 30
    blank, some = tmp_path / "blank.raw", tmp_path / "some.raw"
    make_disk(blank, size, [])
    data = make_disk(some, size, scattered(size, 8, 4 << 20))
    devices = [attach_loop(blank), attach_loop(some)]
    key = secret_file(tmp_path)
    try:
        names = [Path(d).name for d in devices]
        with serving("--secret-file", str(key), *(a for n in names for a in ("--disk", n))):
            session = AgentSession(Address("127.0.0.1", PORT), str(key))
            with session:
                deadline = time.monotonic() + 60
                while not all((m := session.zero_map(n)) and m.complete for n in names):
                    assert time.monotonic() < deadline, "the agent did not finish its scan"
                    time.sleep(0.2)
            for device, name, held in zip(devices, names, (0, data), strict=True):
                url = f"agent://127.0.0.1:{PORT}/{name}"
                done = copy_json(url, str(tmp_path / f"{name}.out"), "--secret-file", str(key))
                assert done["read"] <= held + 8 * (2 << 20), (name, done["read"])
                assert done["digest"] == digest(device)
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False)
