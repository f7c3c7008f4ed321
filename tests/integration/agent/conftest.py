"""The stand-in server every agent test uses, made once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_programs, require_root
from tests.integration.agent.servers import Server, stand_in_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_root("attaches loop devices")
    require_programs("losetup", "parted", "partx", "mkfs.ext4", "pvcreate", "xorriso", "nbdkit")
    with stand_in_server(tmp_path_factory.mktemp("server")) as made:
        yield made
