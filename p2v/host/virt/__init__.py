"""The libvirt layer: the one place that imports `libvirt`.

connection: reaching hosts (one at a time, or one connection per host for a long
operation), and libvirt's errors as P2VError; domains: lookup,
define-or-replace, lifecycle; domainxml: a typed, rewritable view of a
domain's XML; storage: pools, volumes and their contents through streams; console:
a domain's serial console through the connection; migration: a live migration peer
to peer, read and steered, and the CPU comparison before it.
"""

from p2v.host.virt.connection import (
    DEFAULT_URI,
    LOCAL_URIS,
    Connections,
    HostIdentity,
    connect,
    connection,
    domain_types,
    failing_as,
    identity,
    version,
    version_string,
)
from p2v.host.virt.console import Console
from p2v.host.virt.domains import (
    define,
    define_or_replace,
    destroy,
    find,
    lookup,
    lookup_uuid,
    resume,
    start,
    start_transient,
    state,
    undefine,
    wait_for_state,
)
from p2v.host.virt.storage import create_volume, ensure_dir_pool, free_bytes, pool, volume

__all__ = [
    "DEFAULT_URI", "LOCAL_URIS", "Connections", "Console", "HostIdentity", "connect",
    "connection", "create_volume", "define", "define_or_replace", "destroy",
    "domain_types", "ensure_dir_pool", "failing_as", "find", "free_bytes", "identity",
    "lookup", "lookup_uuid", "pool", "resume", "start", "start_transient", "state",
    "undefine", "version", "version_string", "volume", "wait_for_state",
]  # fmt: skip
