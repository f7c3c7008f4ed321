"""The test physical servers are realistic: they boot on SATA, and not on virtio-blk.

Slow: each test boots a Debian guest under QEMU (TCG on hosts where KVM does not work).
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


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_fixture_boots_on_sata_and_prints_its_line(name: str) -> None:
    recipe = recipes.RECIPES[name]
    image = fixture_image(name)
    before = _state(image)
    result = boot.boot(image, recipe.firmware, "sata")
    assert result.booted, f"{name} did not boot on SATA:\n{result.tail()}"
    assert result.fields["host"] == recipe.hostname
    root_lv = next((lv for lv in recipe.logical_volumes if lv.mountpoint == "/"), None)
    expected_root = recipe.lv_device(root_lv) if root_lv else "/dev/sda1"
    assert result.fields["root"] == expected_root
    assert result.fields["disk"] == "ahci"
    assert result.fields["mac"] == f"{recipe.nic_name}={boot.TEST_MAC}"
    # The NIC, configured by its kernel name, came up with its address.
    assert result.fields["net"] == f"{recipe.nic_name}:{recipe.nic_address}"
    assert _state(image) == before, "booting must not write the cached fixture"


def test_no_fixture_boots_on_virtio_blk() -> None:
    """What conversion must fix: no virtio driver in the initramfs, root named sda.
    Both at once: each spends most of its time in the initramfs, waiting for a root
    that never comes (rootdelay), which costs no CPU."""
    names = sorted(recipes.RECIPES)
    images = {name: fixture_image(name) for name in names}
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
