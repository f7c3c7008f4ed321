"""`p2v backup list --graph`: the chain drawn as a tree."""

from __future__ import annotations

from typing import Any

from p2v.backup.chain import graph


def row(n: int, kind: str, parent: int | None) -> dict[str, Any]:
    return {"backup": f"000{n}-b{n}", "kind": kind, "parent": f"000{parent}-b{parent}"
            if parent else None, "started": 1796600000.0 + n * 3600, "consistency": "frozen",
            "disks": {"vda": {"read": n << 20, "stored": n << 20}}}  # fmt: skip


def test_differentials_sit_side_by_side_under_their_full_and_increments_follow() -> None:
    rows = [row(1, "full", None), row(2, "incremental", 1), row(3, "differential", 1),
            row(4, "incremental", 3)]  # fmt: skip
    lines = graph(rows)
    assert [line[: line.index("-b") + 3] for line in lines] == [
        "0001-b1", "├─ 0002-b2", "└─ 0003-b3", "   └─ 0004-b4",
    ]  # fmt: skip
    assert "differential" in lines[2] and "read 3.0 MiB, stored 3.0 MiB" in lines[2]
    assert lines[3].endswith("<- newest") and not lines[0].endswith("<- newest")
