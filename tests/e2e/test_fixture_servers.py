"""The test physical servers are realistic: they do not boot on virtio-blk.

That each boots on SATA as itself is checked when it is built (builder._check_boots),
once per recipe, since the cached image is the one that was checked.
Slow: boots Debian guests under QEMU (TCG on hosts where KVM does not work).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import fixture_image
from tests.fixtures import boot, recipes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _state(path: os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def test_no_fixture_boots_on_virtio_blk() -> None:
    """What conversion must fix: no virtio driver in the initramfs, root named sda.
    Both at once: each spends most of its time in the initramfs, waiting for a root
    that never comes (rootdelay), which costs no CPU."""
    names = sorted(recipes.RECIPES)
    images = {name: fixture_image(name) for name in names}
    before = {name: _state(image) for name, image in images.items()}
    with ThreadPoolExecutor(len(names)) as pool:
        results = dict(
            zip(
                names,
                pool.map(
                    lambda n: boot.boot(images[n], recipes.RECIPES[n].firmware, "virtio"), names
                ),
                strict=True,
            )
        )
    for name, result in results.items():
        assert not result.booted, f"{name} booted on virtio-blk: {result.fields}"
        assert result.root_not_found, (
            f"{name} on virtio-blk should stop in the initramfs for want of its root:\n"
            f"{result.tail()}"
        )
        assert _state(images[name]) == before[name], "booting must not write the cached fixture"
