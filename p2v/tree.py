"""Trees drawn in the terminal, as `git log --graph` and `tree` do: each node under its
parent, siblings oldest first, so the newest branch comes last."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def draw(
    nodes: Sequence[T],
    key: Callable[[T], Hashable],
    parent: Callable[[T], Hashable | None],
    label: Callable[[T], str],
    order: Callable[[T], float],
) -> list[str]:
    """One line per node; a node whose parent is not among `nodes` is a root."""
    keys = {key(n) for n in nodes}
    children: dict[Hashable | None, list[T]] = defaultdict(list)
    for n in nodes:
        up = parent(n)
        children[up if up in keys else None].append(n)
    lines: list[str] = []

    def walk(node: T, prefix: str, last: bool, top: bool) -> None:
        lines.append(prefix + ("" if top else "└─ " if last else "├─ ") + label(node))
        below = prefix + ("" if top else "   " if last else "│  ")
        kids = sorted(children[key(node)], key=order)
        for i, kid in enumerate(kids):
            walk(kid, below, i == len(kids) - 1, False)

    for root in sorted(children[None], key=order):
        walk(root, "", True, True)
    return lines
