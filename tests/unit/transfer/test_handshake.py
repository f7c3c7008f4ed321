"""Which stage of a connection libnbd's state names belong to (recorded names)."""

from __future__ import annotations

import pytest

from p2v.transfer.endpoints.handshake import (
    CONNECT,
    HANDSHAKE,
    NEGOTIATION,
    HandshakeTimeout,
    stage_of,
)


@pytest.mark.parametrize(
    ("state", "stage"),
    [
        ("CONNECT_TCP.CONNECT: Initial call to connect(2) on a TCP socket", CONNECT),
        ("CONNECT.CONNECTING: Connecting to the remote server", CONNECT),
        ("MAGIC.RECV_MAGIC: Receive initial magic identification from remote", HANDSHAKE),
        ("NEWSTYLE.RECV_GFLAGS: Receive newstyle global flags from remote", HANDSHAKE),
        ("NEWSTYLE.OPT_STARTTLS.TLS_HANDSHAKE_READ: TLS handshake (read)", HANDSHAKE),
        ("NEWSTYLE.OPT_GO.RECV_REPLY: Receive newstyle NBD_OPT_GO reply", NEGOTIATION),
        ("NEWSTYLE.OPT_META_CONTEXT.RECV_REPLY: Receive newstyle reply", NEGOTIATION),
    ],
)
def test_state_names_map_to_stages(state: str, stage: str) -> None:
    assert stage_of(state) == stage


def test_timeouts_say_what_did_not_happen() -> None:
    assert "TCP connection was not accepted within 3 s" in str(HandshakeTimeout(CONNECT, 3, True))
    assert "TLS handshake did not complete" in str(HandshakeTimeout(HANDSHAKE, 3, True))
    assert "NBD handshake did not complete" in str(HandshakeTimeout(HANDSHAKE, 3, False))
    assert "NBD negotiation did not complete" in str(HandshakeTimeout(NEGOTIATION, 3, True))
