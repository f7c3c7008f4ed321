"""Announcements of agents in unattended mode: what is accepted, what is refused."""

from __future__ import annotations

import json

import pytest

from agent.inventory.model import Inventory, Machine
from agent.live.announce import announcement
from p2v.host.announcements import Announcement, AnnouncementError


def test_the_agents_announcement_parses_with_the_peer_address() -> None:
    inventory = Inventory(machine=Machine(serial="SN1", uuid="U-1"))
    line = announcement(inventory, 8443, ["sda", "nvme0n1"], "aaaa:bbbb:cccc:dddd")
    parsed = Announcement.parse(line, "192.0.2.7")
    assert parsed == Announcement("192.0.2.7", 8443, "aaaa:bbbb:cccc:dddd", "SN1", "U-1",
                                  ("sda", "nvme0n1"))  # fmt: skip
    assert str(parsed.address) == "192.0.2.7:8443"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"p2v_agent_announce": 2, "port": 8443}, "announcement version 2, this p2v reads 1"),
        ({"p2v_agent_announce": 1, "port": 0}, "bad port 0"),
        ({"p2v_agent_announce": 1, "port": "8443"}, "bad port '8443'"),
        ({"hello": 1}, "not a p2v agent announcement"),
        ([1, 2], "not a p2v agent announcement"),
    ],
)
def test_unusable_announcements_say_why(record: object, reason: str) -> None:
    with pytest.raises(AnnouncementError, match=reason):
        Announcement.parse(json.dumps(record).encode(), "192.0.2.7")
