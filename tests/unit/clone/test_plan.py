"""A bulk clone's plan: names, hosts, identities; refusals before anything is made."""

from __future__ import annotations

import random

import pytest

from p2v.clone import plan
from p2v.errors import InputError

GiB = 1 << 30


def _host(uri: str, free: int = 8 * GiB, domains: tuple[str, ...] = (),
          macs: tuple[str, ...] = ()) -> plan.Host:  # fmt: skip
    return plan.Host(uri, free, frozenset(domains), frozenset(macs))


def test_names_follow_the_pattern_and_a_pattern_without_n_makes_one() -> None:
    assert plan.names("web-{n}", 3) == ["web-1", "web-2", "web-3"]
    assert plan.names("web-{n:03d}", 2, first=9) == ["web-009", "web-010"]
    assert plan.names("db", 1) == ["db"]
    with pytest.raises(InputError, match="has no"):
        plan.names("db", 2)
    with pytest.raises(InputError, match="not a hostname"):
        plan.names("web_{n}", 1)


def test_round_robin_and_by_free_memory() -> None:
    a, b = _host("qemu+tcp://a/system", 8 * GiB), _host("qemu+tcp://b/system", 2 * GiB)
    names = plan.names("w{n}", 4)
    assert plan.spread(names, [a, b], GiB // 2, "round-robin") == [a.uri, b.uri] * 2
    # 8 GiB free against 2: the first three go to a, then a has 6.5 against b's 2.
    assert plan.spread(names, [a, b], GiB // 2, "memory") == [a.uri] * 4
    with pytest.raises(InputError, match="b/system has not the memory"):
        plan.spread(plan.names("w{n}", 10), [a, b], GiB, "round-robin")


def test_a_name_taken_on_any_host_is_found() -> None:
    hosts = [_host("a", domains=("web-2",)), _host("b", domains=("web-3", "x"))]
    assert plan.collisions(plan.names("web-{n}", 3), hosts) == ["web-2 on a", "web-3 on b"]


def test_addresses_skip_the_network_gateway_broadcast_and_those_taken() -> None:
    assert plan.addresses("10.0.0.0/29", 3, {"10.0.0.3"}) == [
        "10.0.0.2/29", "10.0.0.4/29", "10.0.0.5/29"]  # fmt: skip
    assert plan.addresses(None, 2, set()) == [None, None]
    with pytest.raises(InputError, match="has 5 free addresses, 6 clones"):
        plan.addresses("10.0.0.0/29", 6, set())
    with pytest.raises(InputError, match="--ip-pool 10.0.0.0/33"):
        plan.addresses("10.0.0.0/33", 1, set())


def test_identities_are_unique_across_hosts_and_the_same_for_the_same_seed() -> None:
    taken = "52:54:00:00:00:01"
    hosts = [_host("a", macs=(taken,)), _host("b")]
    names = plan.names("c{n}", 200)
    made = plan.make(names, ["a", "b"] * 100, hosts, 2, [None] * 200, random.Random(7))
    macs = [m for c in made.clones for m in c.macs]
    assert len(macs) == 400 == len(set(macs)) and taken not in macs
    assert len({c.uuid for c in made.clones}) == 200
    again = plan.make(names, ["a", "b"] * 100, hosts, 2, [None] * 200, random.Random(7))
    assert again == made
    assert plan.Plan.from_json(made.to_json()) == made


def test_clashes_name_what_two_clones_share_and_what_the_golden_has() -> None:
    from p2v.clone.inventory import Seen, clashes

    golden = Seen("golden", None, macs=["52:54:00:00:00:01"], hostname="gold")
    a = Seen("a", "u", "1", ["52:54:00:00:00:02"], "a", "m1", None, ["SHA256:x"])
    b = Seen("b", "u", "2", ["52:54:00:00:00:03"], "gold", "m1", None, ["SHA256:y"])
    c = Seen("c", "u", "3", ["52:54:00:00:00:01"], "c", None, None, [])  # not booted yet
    assert clashes([a, b, c], golden) == [
        "hostname gold of b is the golden's",
        "machine-id m1 is shared by a, b",
        "MAC 52:54:00:00:00:01 of c is the golden's",
    ]
    assert clashes([a, c], golden)[0].startswith("MAC")


def test_a_fingerprint_is_ssh_keygens() -> None:
    from p2v.clone.inventory import fingerprint

    # What `ssh-keygen -lf` printed for this key.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyDrQ8ADSU6/nVxy/ygbGxBUGcxoSoXGDyHjpm0K2ZJ g"
    assert fingerprint(line) == "SHA256:OAYFnxoxuDQGLmMawtTj7JNlTerSp2q/doMBfXUdBXs"
    assert fingerprint("junk") is None
