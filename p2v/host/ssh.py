"""Commands on another Linux machine over SSH: OpenSSH's own client, as the user
has it set up (their keys, agent, ~/.ssh/config, known hosts).

One master connection per peer (ControlMaster), so that the commands of a process
move, which run while the program is frozen, do not each pay for a handshake. Every
wait has a time limit: the connection (ConnectTimeout), a peer that stops answering
(ServerAlive*), and each command (`timeout`). BatchMode: never a prompt.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from p2v.errors import ComponentError, InputError, MissingComponent

DEFAULT_CONNECT_TIMEOUT = 10.0
ALIVE_INTERVAL_S = 5
ALIVE_COUNT = 3  # a peer silent for 15 s is gone


@dataclass(frozen=True)
class Peer:
    """ssh://[USER@]HOST[:PORT]"""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> Peer:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise InputError(f"{url!r}: give a machine as ssh://[USER@]HOST[:PORT]")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise InputError(f"{url!r}: the port is not a number from 1 to 65535")
        return cls(parts.hostname, parts.username, port)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"


class Shell:
    """Commands on one peer. Use as a context manager: the master connection ends
    with it."""

    def __init__(
        self,
        peer: Peer,
        config: str | None = None,
        identity: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if shutil.which("ssh") is None:
            raise MissingComponent("OpenSSH's client (ssh)", "install openssh-client")
        self.peer = peer
        self._control = tempfile.mkdtemp(prefix="p2v-ssh-")
        options = [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control}/master",
            "-o", "ControlPersist=60",
        ]  # fmt: skip
        if config:
            options = ["-F", config, *options]
        if identity:
            options += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        if peer.user:
            options += ["-l", peer.user]
        if peer.port:
            options += ["-p", str(peer.port)]
        self._base = ["ssh", *options, "--", peer.host]

    def argv(self, script: str) -> list[str]:
        """The local command that runs the shell `script` on the peer."""
        return [*self._base, script]

    def run(self, script: str, timeout: float, stdin: bytes | None = None) -> str:
        """The script's output; a non-zero exit is a ComponentError with its message."""
        done = self._complete(script, timeout, stdin or b"")
        if done.returncode != 0:
            raise ComponentError(f"{self.peer}: {_last_line(done.stderr, done.returncode)}")
        return done.stdout.decode(errors="replace")

    def attempt(self, script: str, timeout: float) -> tuple[int, str, str]:
        """(exit status, output, errors) of the script, whatever its status: for
        checks that report what failed rather than fail."""
        done = self._complete(script, timeout, b"")
        if done.returncode == 255:  # ssh's own failure: the peer was not reached
            raise ComponentError(f"{self.peer}: {_last_line(done.stderr, 255)}")
        return (
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def _complete(
        self, script: str, timeout: float, stdin: bytes
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(self.argv(script), input=stdin, capture_output=True,
                                  timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ComponentError(f"{self.peer}: no answer within {timeout:g} s") from None

    def popen(self, script: str, **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(script), **kwargs)  # type: ignore[call-overload]

    def close(self) -> None:
        subprocess.run([*self._base[:-2], "-O", "exit", "--", self.peer.host],
                       capture_output=True, timeout=10, check=False)  # fmt: skip
        shutil.rmtree(self._control, ignore_errors=True)

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _last_line(stderr: bytes, status: int) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exited with status {status}"


@contextlib.contextmanager
def shells(*peers: tuple[Peer, str | None, str | None, float]) -> Iterator[list[Shell]]:
    """Shells on several peers, closed together."""
    opened: list[Shell] = []
    try:
        for peer, config, identity, timeout in peers:
            opened.append(Shell(peer, config, identity, timeout))
        yield opened
    finally:
        for shell in opened:
            shell.close()
