"""`p2v migrate-process` between two Debian 12 servers with CRIU: two guests of the
procnode fixture, one per test host, on the hosts' bridge. Node A runs the counter
service (64 MiB, 1 MiB/s rewritten) behind the service address; the tests reach both
nodes over SSH as a user would, with a key and a known host key."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures import procnode
from tests.fixtures.procnode import build as procnode_build
from tests.guests import nodes
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NODE_A, NODE_B = "p2vt-node-a", "p2vt-node-b"
IP_A, IP_B, SERVICE = "10.253.0.221", "10.253.0.222", "10.253.0.230"


@pytest.fixture(scope="module")
def nodes_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both nodes booted (side by side: each boot is mostly waiting on its own vCPU);
    yields the ssh_config that reaches them."""
    require_root("test hosts are namespaces")
    procnode_build.build()
    config = nodes.ssh_config(tmp_path_factory.mktemp("ssh") / "config")
    with hosts.running(["p2vt-cln-a", "p2vt-cln-b"]) as [a, b]:
        gw = str(hosts.GATEWAY)
        settings = {
            NODE_A: (a.uri, procnode.NodeSettings("node-a", f"{IP_A}/24", gw, counter=True,
                                                  service=f"{SERVICE}/24", memory_mib=16,
                                                  dirty_mib_s=1)),
            NODE_B: (b.uri, procnode.NodeSettings("node-b", f"{IP_B}/24", gw)),
        }  # fmt: skip
        starting = {
            name: subprocess.Popen(
                [sys.executable, "-c", "import sys, json; from tests.guests import nodes; "
                 "from tests.fixtures.procnode import NodeSettings as S; "
                 "nodes.start(sys.argv[1], sys.argv[2], S(**json.loads(sys.argv[3])))",
                 uri, name, json.dumps(s.__dict__)],
                stderr=subprocess.PIPE, text=True,
            )
            for name, (uri, s) in settings.items()
        }  # fmt: skip
        try:
            for name, proc in starting.items():
                _, err = proc.communicate(timeout=nodes.START_TIMEOUT + 120)
                assert proc.returncode == 0, f"{name} did not come up:\n{err}"
            yield config
        finally:
            for name, (uri, _) in settings.items():
                guests.stop_anywhere([uri], name)


def _ssh(config: Path, ip: str, script: str) -> str:
    done = subprocess.run(["ssh", "-F", str(config), ip, script], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    return done.stdout


def _move(config: Path, *args: str) -> list[str]:
    return ["migrate-process", "--ssh-config", str(config), *args]


def test_a_move_refused_names_what_cannot_go_and_freezes_nothing(nodes_up: Path) -> None:
    """An established connection without --keep-tcp, and an address the source does
    not hold: both named, the program untouched."""
    pid = _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip()
    with guests.CounterWatch(SERVICE) as watch:
        assert watch.wait_for_more(5, 30), "the counter service does not answer"
        refused = p2v(*_move(nodes_up, "--unit", "p2v-counter", "--from", f"ssh://{IP_A}",
                             "--to", f"ssh://{IP_B}", "--move-address", "10.253.0.231"),
                      check=False)  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert f"{SERVICE}:7777 <-> 10.253.0.1:" in refused.stderr, refused.stderr
        assert "--keep-tcp takes it along" in refused.stderr
        assert "does not hold the address 10.253.0.231" in refused.stderr
        assert watch.wait_for_more(5, 10) and not watch.lost and not watch.closed
    assert _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip() == pid


@pytest.mark.parametrize(
    ("when", "after"),
    [("pre-dump 2 ...", 0.5), ("move ...", 1.0)],
    ids=["in-a-pre-dump-pass", "while-frozen"],
)
def test_killing_p2v_leaves_the_program_running_on_the_source(
    nodes_up: Path, when: str, after: float
) -> None:
    """kill -9 of p2v while CRIU pre-dumps, and while the final dump holds the program
    frozen: it runs on at A with its address, its client loses nothing and stays
    connected, and nothing of it runs on B."""
    pid = _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip()
    with guests.CounterWatch(SERVICE) as watch:
        assert watch.wait_for_more(5, 30)
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2v.cli", *_move(nodes_up, "--unit", "p2v-counter",
             "--from", f"ssh://{IP_A}", "--to", f"ssh://{IP_B}", "--live", "--keep-tcp",
             "--move-address", SERVICE)], stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:
            said.append(line)
            if when in line:
                time.sleep(after)
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "".join(said)
        assert watch.wait_for_more(30, 30), "the counter stopped after p2v was killed"
        assert not watch.lost and not watch.closed
    assert _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip() == pid
    assert SERVICE in _ssh(nodes_up, IP_A, "ip -br addr")
    assert "criu" not in _ssh(nodes_up, IP_A, "ps -eo comm")
    assert "p2v-counterd" not in _ssh(nodes_up, IP_B, "ps -eo comm")
    assert SERVICE not in _ssh(nodes_up, IP_B, "ip -br addr")


def test_a_restore_that_fails_leaves_the_program_thawed_on_the_source(nodes_up: Path) -> None:
    """A cold move whose unpacking on B fails (the service's log there is immutable):
    the program was frozen for the whole copy, and carries on at A with its client's
    connection, count and address; nothing of it is left on B."""
    pid = _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip()
    log = "/var/log/p2v-counterd.log"
    _ssh(nodes_up, IP_B, f"echo stale >{log} && chattr +i {log}")
    try:
        with guests.CounterWatch(SERVICE) as watch:
            assert watch.wait_for_more(5, 30)
            failed = p2v(*_move(nodes_up, pid, "--from", f"ssh://{IP_A}", "--to",
                                f"ssh://{IP_B}", "--keep-tcp", "--move-address", SERVICE),
                         check=False, timeout=600)  # fmt: skip
            assert failed.returncode == 10, failed.stderr
            assert f"process {pid} runs on ssh://{IP_A} as before" in failed.stderr
            assert watch.wait_for_more(20, 30), "the counter did not carry on at A"
            assert not watch.lost and not watch.closed
    finally:
        _ssh(nodes_up, IP_B, f"chattr -i {log}; rm -f {log}")
    assert _ssh(nodes_up, IP_A, "systemctl show -p MainPID --value p2v-counter").strip() == pid
    assert SERVICE in _ssh(nodes_up, IP_A, "ip -br addr")
    assert SERVICE not in _ssh(nodes_up, IP_B, "ip -br addr")
    assert "p2v-counterd" not in _ssh(nodes_up, IP_B, "ps -eo comm")


def test_a_live_move_with_its_connection_loses_nothing_and_the_count_goes_on(
    nodes_up: Path,
) -> None:
    """--live --keep-tcp --move-address: a client connected before the move gets
    every value once, on the same connection; the service runs on B, counting on from
    where it was, and neither runs nor is started again on A."""
    with guests.CounterWatch(SERVICE) as watch:
        assert watch.wait_for_more(10, 30)
        before = watch.values[-1]
        done = p2v(*_move(nodes_up, "--unit", "p2v-counter", "--from", f"ssh://{IP_A}",
                          "--to", f"ssh://{IP_B}", "--live", "--keep-tcp", "--move-address",
                          SERVICE, "--json"), timeout=600)  # fmt: skip
        record = json.loads(done.stdout)
        moved_at = time.monotonic()
        assert watch.wait_for_more(30, 30), f"no counter after the move:\n{done.stderr}"
        assert not watch.lost, watch.lost
        assert not watch.closed
        after = [v for at, v in watch.seen if at > moved_at]
        assert after[0] > before + 10, "the count started again instead of going on"
        gap = watch.longest_gap
    assert record["passes"] and record["freeze_ms"] > 0 and record["criu_frozen_ms"] > 0
    shown = p2v("show", record["job"]).stdout
    assert "move" in shown and f"frozen {record['freeze_ms']} ms" in shown
    assert "p2v-counterd" in _ssh(nodes_up, IP_B, "ps -eo comm")
    assert SERVICE in _ssh(nodes_up, IP_B, "ip -br addr")
    time.sleep(1)  # Restart= would have started it again by now
    assert "p2v-counterd" not in _ssh(nodes_up, IP_A, "ps -eo comm")
    assert SERVICE not in _ssh(nodes_up, IP_A, "ip -br addr")
    # The file it has open, which B lacked, came along.
    assert "p2v-counterd started" in _ssh(nodes_up, IP_B, "cat /var/log/p2v-counterd.log")
    print(f"freeze {record['freeze_ms']} ms (CRIU {record['criu_frozen_ms']} ms), "
          f"client gap {gap:.2f} s, passes {[p['pages'] for p in record['passes']]}")  # fmt: skip
