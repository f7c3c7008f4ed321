"""Time limits on every wait for a peer: a server that accepts the connection and
then says nothing, an agent or NBD server that stops answering in the middle of a
copy. Each ends in a clear error within its limit, and a copy can be resumed."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.protocol import Address
from p2v.errors import AgentError
from p2v.host.agentclient import AgentSession
from tests.conftest import attach_loop
from tests.integration.agent.servers import Server
from tests.integration.agent.test_serve import PORT, secret_file, serving
from tests.integration.transfer.disks import (
    MiB,
    data_blocks,
    digest,
    make_disk,
    p2v,
    scattered,
    serve,
)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word on them: what a NAT
    forwarding to a machine that does not listen, or another service, looks like."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


def timed(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = p2v(*args, check=False, timeout=60)
    return done, time.monotonic() - start


def test_an_agent_address_that_never_answers_fails_within_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))  # a journal of its own
    key = secret_file(tmp_path)
    with silent_server() as port:
        agent = f"127.0.0.1:{port}"
        for argv in (
            ["inventory", "--agent", agent],
            ["checksum", f"agent://{agent}/sda"],
            ["copy", f"agent://{agent}/sda", str(tmp_path / "out.raw")],
            ["convert", "--agent", agent, "--output-dir", str(tmp_path / "out")],
        ):
            done, took = timed(*argv, "--secret-file", str(key), "--connect-timeout", "2")
            assert done.returncode == 6, (argv, done.stderr)
            assert f"the agent at {agent} does not answer" in done.stderr
            assert "the TLS handshake did not complete within 2 s" in done.stderr
            assert "is it `p2v-agent serve` that listens on that port" in done.stderr
            assert "Traceback" not in done.stderr
            assert took < 20, (argv, took)
    assert p2v("history").stdout.startswith("no jobs"), "nothing started: nothing recorded"
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.raw").exists()


def test_an_nbd_server_that_never_answers_fails_within_the_limit(tmp_path: Path) -> None:
    with silent_server() as port:
        done, took = timed("checksum", f"nbd://127.0.0.1:{port}/", "--connect-timeout", "2")
    assert done.returncode == 1 and took < 20
    assert "the NBD handshake did not complete within 2 s" in done.stderr


@contextlib.contextmanager
def pausable(image: Path, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """nbdkit serving `image` behind its pause filter; yields the URI and the filter's
    control socket (send b"p" to stop answering, b"r" to go on)."""
    sock, control = tmp_path / "nbd.sock", tmp_path / "control.sock"
    argv = ["nbdkit", "--foreground", "--exit-with-parent", f"--unix={sock}",
            "--filter=pause", "file", f"file={image}", f"pause-control={control}"]  # fmt: skip
    with serve(argv, sock) as uri, socket.socket(socket.AF_UNIX) as ctl:
        ctl.connect(str(control))
        ctl.settimeout(30)
        yield uri, ctl


def start_copy(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`p2v copy --json ARGS` in the background, once it has named its job."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", "copy", "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    return proc, first["job"]


def wait_for_blocks(job: str, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 60
    while data_blocks(job) < count:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)


def test_a_server_that_stops_answering_mid_copy_fails_it_resumably(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    size = 96 * MiB
    make_disk(image, size, scattered(size, 20, 2 * MiB))
    with pausable(image, tmp_path) as (uri, control):
        proc, job = start_copy(uri, str(tmp_path / "out.raw"), "--bwlimit", "8M",
                               "--checkpoint", "0.5", "--io-timeout", "3")  # fmt: skip
        wait_for_blocks(job, proc, 2)
        control.sendall(b"p")
        assert control.recv(1) == b"P"
        paused = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 5, err
        assert time.monotonic() - paused < 20
        assert f"no reply from {uri} for 3 s" in err
        assert f"resume with `p2v copy --resume {job}`" in err
        control.sendall(b"r")
        assert control.recv(1) == b"R"
        done = p2v("copy", "--resume", job, "--bwlimit", "1G")
    assert f"digest {digest(image)}" in done.stdout


def agent_nbdkit(agent: subprocess.Popen[str]) -> psutil.Process:
    return next(p for p in psutil.Process(agent.pid).children() if p.name() == "nbdkit")


def test_an_agent_that_stops_answering_mid_copy_fails_it_resumably(tmp_path: Path) -> None:
    """A disk with 64 MiB of data, copied at 8 MiB/s: the agent stops in the middle."""
    image = tmp_path / "disk.raw"
    make_disk(image, 256 * MiB, scattered(256 * MiB, 32, 2 * MiB))
    device = attach_loop(image)
    key = secret_file(tmp_path)
    disk = Path(device).name
    try:
        with serving("--secret-file", str(key), "--disk", disk) as (agent, _):
            url = f"agent://127.0.0.1:{PORT}/{disk}"
            proc, job = start_copy(url, str(tmp_path / "out.raw"), "--secret-file", str(key),
                                   "--bwlimit", "8M", "--checkpoint", "0.5",
                                   "--io-timeout", "3")  # fmt: skip
            wait_for_blocks(job, proc, 2)
            nbdkit = agent_nbdkit(agent)
            nbdkit.send_signal(signal.SIGSTOP)
            try:
                _, err = proc.communicate(timeout=60)
            finally:
                nbdkit.send_signal(signal.SIGCONT)
            assert proc.returncode == 5, err
            assert f"no reply from {url} for 3 s" in err
            done = p2v("copy", "--resume", job, "--bwlimit", "1G")
            assert f"digest {digest(image)}" in done.stdout
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_the_relay_stops_when_the_agent_stops_answering(server: Server, tmp_path: Path) -> None:
    """What reads through the relay (QEMU, libguestfs) fails instead of waiting forever."""
    key = secret_file(tmp_path)
    disk = Path(server.mbr).name
    with serving("--secret-file", str(key), "--disk", disk) as (agent, _):
        session = AgentSession(Address("127.0.0.1", PORT), str(key), connect_timeout=2)
        relay = tmp_path / "relay.sock"
        with session, session.local_proxy(relay, disk, watch_interval=0.5) as proxy:
            assert proxy.lost is None
            nbdkit = agent_nbdkit(agent)
            nbdkit.send_signal(signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 30
                while proxy.lost is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                nbdkit.send_signal(signal.SIGCONT)
            assert proxy.lost and "TLS handshake did not complete within 2 s" in proxy.lost
            reader = subprocess.run(["nbdinfo", proxy.uri(disk)], capture_output=True)
            assert reader.returncode != 0, "the relay is gone"


def test_the_relay_is_tried_before_use(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    with silent_server() as port:
        session = AgentSession(Address("127.0.0.1", port), str(key), connect_timeout=2)
        with (
            session,
            pytest.raises(AgentError) as refused,
            session.local_proxy(tmp_path / "relay.sock", "sda"),
        ):
            pass
    assert "could not open sda on the agent" in str(refused.value)
    assert not (tmp_path / "relay.sock").exists()


def test_a_server_that_goes_away_fails_a_rescue_copy_instead_of_zeroing_the_rest(
    tmp_path: Path,
) -> None:
    """--rescue fills sectors that cannot be read; a connection that broke is not
    that: the copy fails, resumably, and nothing is listed as unreadable."""
    image = tmp_path / "disk.raw"
    size = 96 * MiB
    make_disk(image, size, scattered(size, 20, 2 * MiB))
    sock = tmp_path / "nbd.sock"
    argv = ["nbdkit", "--foreground", "--exit-with-parent", f"--unix={sock}", "file", str(image)]
    with serve(argv, sock) as uri:
        proc, job = start_copy(uri, str(tmp_path / "out.raw"), "--rescue", "--bwlimit", "8M",
                               "--checkpoint", "0.5")  # fmt: skip
        wait_for_blocks(job, proc, 2)
        nbdkit = next(p for p in psutil.Process().children() if p.name() == "nbdkit")
        nbdkit.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    assert f"lost the connection to {uri}" in err
    assert not json.loads(p2v("history", job, "--json").stdout)["result"], "nothing zero-filled"
    sock.unlink()  # left by the server that was killed
    with serve(argv, sock):
        done = p2v("copy", "--resume", job, "--json")
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["digest"] == digest(image) and result["bad"] == []
