"""libguestfs set up for this host, for our handles and for its command-line tools:
direct backend, TCG when KVM does not work."""

from __future__ import annotations

import os
from typing import Any

from p2v import accel
from p2v.errors import MissingComponent


def new_handle(decision: accel.AccelDecision | None = None) -> Any:
    """A guestfs handle (not launched) using the accelerator the probe chose."""
    try:
        import guestfs
    except ImportError as error:
        raise MissingComponent(
            "the libguestfs Python binding", "install python3-guestfs"
        ) from error
    decision = decision or accel.detect()
    handle = guestfs.GuestFS(python_return_dict=True)
    handle.set_backend("direct")
    handle.set_backend_settings(decision.guestfs_backend_settings)
    return handle


def tool_environment(
    base: dict[str, str] | None = None, decision: accel.AccelDecision | None = None
) -> dict[str, str]:
    """The environment for libguestfs' command-line tools (virt-sysprep, virt-v2v):
    `base` (default: ours) with the backend and accelerator our handles use."""
    env = {**(os.environ if base is None else base), "LIBGUESTFS_BACKEND": "direct"}
    settings = (decision or accel.detect()).guestfs_backend_settings
    if settings:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = ":".join(settings)
    return env
