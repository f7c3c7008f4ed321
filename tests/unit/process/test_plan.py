"""What a process move decides before it freezes anything (pure: no machine)."""

from __future__ import annotations

from typing import Any

import pytest

from p2v.errors import InputError
from p2v.host.criu import continue_script, discard_script, restore_script
from p2v.host.ssh import Peer
from p2v.process import plan

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def _source(**changes: Any) -> plan.Source:
    data: dict[str, Any] = {
        "pid": 30001, "pids": [30001, 30002], "tids": [30001, 30002, 30003], "start": 4242,
        "tasks": [{"pid": 30001, "comm": "svc", "exe": "/usr/bin/svc"},
                  {"pid": 30002, "comm": "worker", "exe": "/usr/bin/svc"}],
        "unit": "svc.service", "rss": 64 * plan.MiB,
        "binaries": {"/usr/bin/svc": {"size": 10, "sha256": "aa"},
                     LIBC: {"size": 20, "sha256": "bb"}},
        "files": {"/var/log/svc.log": {"size": 5, "sha256": "cc"},
                  "/etc/svc.conf": {"size": 3, "sha256": "dd"}},
        "established": [], "listening": [[8080, "svc[30001] fd 3"]], "problems": [],
        "free": 10 << 30, "hostname": "a",
    }  # fmt: skip
    data.update(changes)
    return plan.Source(**data)


def _target(**changes: Any) -> plan.Target:
    data: dict[str, Any] = {
        "paths": {"/usr/bin/svc": {"size": 10, "sha256": "aa"},
                  LIBC: {"size": 20, "sha256": "bb"},
                  "/etc/svc.conf": {"size": 3, "sha256": "dd"}},
        "free": 10 << 30, "pids": [1, 2, 300], "listening": [22], "hostname": "b",
    }  # fmt: skip
    data.update(changes)
    return plan.Target(**data)


def test_a_tree_whose_binaries_and_pids_are_there_is_not_refused() -> None:
    assert plan.refusals(_source(), _target(), False, "A", "B") == []


def test_every_refusal_is_named_at_once() -> None:
    source = _source(established=["svc[30001] fd 4 (10.0.0.5:80 <-> 10.0.0.9:5000)"],
                     problems=["svc[30001] fd 0 is the terminal /dev/pts/0"])  # fmt: skip
    target = _target(
        paths={"/usr/bin/svc": {"size": 10, "sha256": "ff"}},
        pids=[30003], free=1 << 20, listening=[22, 8080],
    )  # fmt: skip
    problems = plan.refusals(source, target, False, "A", "B")
    text = "\n".join(problems)
    assert "the terminal /dev/pts/0" in text
    assert "10.0.0.5:80 <-> 10.0.0.9:5000) is an established TCP connection: --keep-tcp" in text
    assert "B's /usr/bin/svc differs from A's" in text
    assert f"B has no {LIBC}" in text
    assert "ID 30003 (a thread of the tree) is in use on B" in text
    assert "B has 1.0 MiB free for the images" in text
    assert "svc[30001] fd 3 listens on TCP port 8080, which B has in use" in text
    assert len(problems) == 7


def test_keep_tcp_takes_established_connections_along() -> None:
    source = _source(established=["svc[30001] fd 4 (10.0.0.5:80 <-> 10.0.0.9:5000)"])
    assert plan.refusals(source, _target(), True, "A", "B") == []


def test_open_files_the_destination_lacks_or_has_otherwise_are_moved() -> None:
    target = _target()
    assert plan.files_to_move(_source(), target) == ["/var/log/svc.log"]
    target.paths["/etc/svc.conf"] = {"size": 3, "sha256": "00"}
    assert plan.files_to_move(_source(), target) == ["/etc/svc.conf", "/var/log/svc.log"]


@pytest.mark.parametrize(
    ("pages", "again"),
    [
        ([], False),  # cold: no passes
        ([16000], True),  # after the first, always a second
        ([16000, 3000], True),  # shrinking
        ([16000, 3000, 3500], False),  # no longer shrinking: the program dirties as fast
        ([4000, 1600, 1200], False),  # not halved: another pass would gain little
        ([16000, 200], False),  # what is left is small
        ([16000, 8000, 4000, 2000], False),  # at most MAX_PASSES
    ],
)
def test_passes_stop_when_small_not_halving_or_enough(pages: list[int], again: bool) -> None:
    assert plan.another_pass(pages) is again


def test_machines_are_ssh_urls() -> None:
    assert Peer.parse("ssh://root@10.0.0.5:2222") == Peer("10.0.0.5", "root", 2222)
    assert str(Peer.parse("ssh://host")) == "ssh://host"
    for bad in ("host", "http://host", "ssh://host/path", "ssh://host:99999", "ssh://host:0"):
        with pytest.raises(InputError):
            Peer.parse(bad)


def test_the_restore_gives_the_address_back_when_it_fails() -> None:
    script = restore_script("/w", True, "10.0.0.7/24", "eth0", [5, 6], ["/etc/a b"])
    take, restore = script.index("ip addr add 10.0.0.7/24"), script.index("criu restore")
    check = script.index("sha256sum --quiet --strict -c w/final.sha256")
    assert check < take < restore
    assert "--tcp-established" in script and "--leave-stopped" in script
    assert script.index("ip addr del 10.0.0.7/24") > restore
    assert "ip addr" not in restore_script("/w", False, None, None, [5], [])
    assert script.index("for t in 5 6; do [ ! -d /proc/$t ]") < script.index("tar -C / -xf -")
    assert continue_script([5, 6], None, None) == "kill -CONT 5 6"
    dropped = discard_script("/w", [5, 6], "10.0.0.7/24", "eth0")
    assert dropped.startswith("kill -KILL 5 6") and "ip addr del 10.0.0.7/24 dev eth0" in dropped
    assert "arping -U -c 2 -I eth0 10.0.0.7" in continue_script([5], "10.0.0.7/24", "eth0")
