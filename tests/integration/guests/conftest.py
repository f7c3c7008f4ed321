"""The test guest's image, built (or taken from the cache) once per session."""

from pathlib import Path

import pytest

from tests.conftest import fixture_image, require_programs


@pytest.fixture(scope="session")
def vmguest_image() -> Path:
    require_programs("qemu-img", "e2fsck", "debugfs", "extlinux", "gcc")
    return fixture_image("vmguest")
