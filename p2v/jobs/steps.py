"""The steps of a multi-step job (a conversion, a migration), each recorded in the
journal as it begins and ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from p2v.jobs.journal import Journal


class Step:
    """Records one step in the journal; a failure is recorded with its message."""

    def __init__(self, journal: Journal, job_id: str, say: Callable[[str], None]) -> None:
        self.journal, self.job_id, self.say = journal, job_id, say

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        self.say(f"{name} ...")
        self.journal.step_started(self.job_id, name)
        detail: dict[str, Any] = {}
        try:
            yield detail
        except BaseException as e:
            self.journal.step_ended(self.job_id, name, {**detail, "error": str(e)}, failed=True)
            raise
        self.journal.step_ended(self.job_id, name, detail)
