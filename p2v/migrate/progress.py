"""A live migration's progress: a tqdm bar for people (memory sent, with what is left,
the dirty rate, the pass and the downtime limit beside it), JSON lines for scripts."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO

from p2v.units import format_size

INTERVAL_S = 0.5


class Progress(Protocol):
    def update(self, fields: dict[str, Any]) -> None: ...

    def event(self, name: str, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Bar:
    def __init__(self, job_id: str, vm: str, stream: TextIO = sys.stderr) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
                         desc=f"{job_id} {vm}", dynamic_ncols=True, leave=True)  # fmt: skip

    def update(self, fields: dict[str, Any]) -> None:
        self._bar.total = max(fields["memory_total"] + fields["disk_total"], self._bar.total or 0)
        self._bar.n = fields["processed"]
        self._bar.set_postfix_str(
            f"{format_size(fields['memory_remaining'])} left, dirty "
            f"{format_size(fields['dirty_rate'])}/s, pass {fields['pass']}, downtime "
            f"{fields['downtime_limit_ms']} ms",
            refresh=True,
        )

    def event(self, name: str, **fields: Any) -> None:
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        self._bar.write(f"p2v: {name} {detail}".rstrip(), file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


class JsonLines:
    """One object per line on stdout, at most every INTERVAL_S, and every event."""

    def __init__(self, job_id: str, stream: TextIO = sys.stdout) -> None:
        self._job, self._stream, self._last = job_id, stream, 0.0

    def _emit(self, event: str, fields: dict[str, Any]) -> None:
        self._stream.write(json.dumps({"event": event, "job": self._job, **fields}) + "\n")
        self._stream.flush()

    def update(self, fields: dict[str, Any]) -> None:
        if time.monotonic() - self._last >= INTERVAL_S:
            self._last = time.monotonic()
            self._emit("progress", fields)

    def event(self, name: str, **fields: Any) -> None:
        self._emit(name, fields)

    def close(self) -> None:
        pass


class Quiet:
    def update(self, fields: dict[str, Any]) -> None:
        pass

    def event(self, name: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass
