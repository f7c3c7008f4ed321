"""Unattended mode on loopback: an agent's announcement is believed only once the
conversion host has connected back with its secret and read the inventory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.inventory.model import Inventory
from agent.live import announce
from agent.protocol import Address, fingerprint, generate_secret, normalize_secret
from tests.conftest import free_port
from tests.integration.agent.servers import Server
from tests.integration.agent.test_serve import PORT, secret_file, serving
from tests.integration.transfer.disks import p2v


def test_announced_agent_is_verified_then_listed(server: Server, tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    fp = fingerprint(normalize_secret(key.read_text()))
    disk = Path(server.gpt).name
    listen = Address("127.0.0.1", free_port())
    with serving("--secret-file", str(key), "--disk", disk):
        inventory = Inventory.from_json(
            p2v("inventory", "--agent", f"127.0.0.1:{PORT}", "--secret-file", str(key),
                "--json").stdout
        )  # fmt: skip
        waiter = subprocess.Popen(
            [sys.executable, "-m", "p2v.cli", "agents", "--listen", str(listen),
             "--secret-file", str(key), "--count", "1", "--timeout", "120", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiter.stderr is not None
        assert "waiting for agents" in waiter.stderr.readline()

        # Claims that do not hold are refused, and the sender is told why.
        other = fingerprint(normalize_secret(generate_secret()))
        impostor = announce.announcement(inventory, PORT, [disk], other)
        assert announce.send(listen, impostor).startswith("refused: its secret is not ours")
        nobody = announce.announcement(inventory, free_port(), [disk], fp)
        assert announce.send(listen, nobody).startswith("refused: cannot reach")
        assert announce.send(listen, b"GET / HTTP/1.0\n").startswith("refused: not a p2v agent")

        answer = announce.send(listen, announce.announcement(inventory, PORT, [disk], fp))
        assert answer.startswith("ok: verified")
        out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    (line,) = out.splitlines()
    record = json.loads(line)
    assert record["agent"] == f"127.0.0.1:{PORT}"
    assert record["disks"] == [disk]
    assert record["uuid"] == inventory.machine.uuid
    assert record["fingerprint"] == fp
    assert err.count("refused an announcement from 127.0.0.1") == 3
    assert normalize_secret(key.read_text()) not in out + err


def test_nobody_announcing_ends_with_a_clear_error(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    listen = f"127.0.0.1:{free_port()}"
    done = p2v("agents", "--listen", listen, "--secret-file", str(key), "--count", "2",
               "--timeout", "1", check=False)  # fmt: skip
    assert done.returncode == 1
    assert "0 of 2 agents announced themselves in 1.0 s" in done.stderr
