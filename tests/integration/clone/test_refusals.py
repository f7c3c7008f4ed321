"""`p2v clone` refuses before anything is made or recorded: on libvirt's test driver
(its one host has a domain `test`, running, its disk in no pool, 3 MiB of free memory
and a 100 GiB pool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from p2v.clone import job
from p2v.errors import InputError
from p2v.jobs.journal import Journal
from p2v.transfer.progress import QuietReporter

URI = "test:///default"


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    return str(path)


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"pattern": "test"}, "a domain named test on test:///default exists already"),
        ({"pattern": "web-{n}", "count": 5, "ip_pool": "10.0.0.0/30"},
         "--ip-pool 10.0.0.0/30 has 1 free addresses, 5 clones need one each"),
        ({"pattern": "web-{n}", "start": True}, "has not the memory for its share"),
        ({"pattern": "web-{n}", "uris": [URI, URI]}, "are one host: give it once"),
        ({"pattern": "web", "count": 2}, "has no {n}"),
        ({"pattern": "web-{n}", "personalize": "first-boot"},
         "is not a sealed golden: its clones would all carry its identity"),
        ({"pattern": "web-{n}", "personalize": "offline", "full": True},
         "--personalize offline writes linked clones' overlays: with --full use first-boot"),
        ({"source": "test", "pattern": "web-{n}"},
         "test is running: clone it with --live (its disk as it is at one instant"),
        ({"source": "test", "pattern": "web-{n}", "live": True},
         "test's disk /guest/diskimage1 is in no storage pool of its host"),
        ({"source": "nosuch", "pattern": "web-{n}"},
         "nosuch: no golden of that name (`p2v golden list`), no such image file, and no VM "
         "of that name on test:///default"),
        ({"pattern": "web-{n}", "live": True}, "is a golden or an image: --live and --from are "
         "for a VM"),
    ],
)  # fmt: skip
def test_refused_before_anything_is_made(
    image: str, changes: dict[str, object], refused: str
) -> None:
    fields = {"source": image, "count": 1, "uris": [URI], "personalize": "none",
              "pool": "default-pool", **changes}  # fmt: skip
    journal = Journal()
    try:
        before = journal.jobs(limit=1000)
        with pytest.raises(InputError, match=re.escape(refused)):
            job.run(job.Request(**fields), journal, lambda _: None, QuietReporter())  # type: ignore[arg-type]
        assert journal.jobs(limit=1000) == before, "a refusal records nothing"
    finally:
        journal.close()
