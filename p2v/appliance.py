"""libguestfs handles set up for this host: direct backend, TCG when KVM does not work."""

from __future__ import annotations

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
