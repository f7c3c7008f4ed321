"""The shared transfer engine: every job that moves a disk goes through here.

endpoints/  one interface, file / NBD / null implementations, and qemu-nbd for formats
extents     what a disk holds where; plan: extents -> per-block work
blockhash   the format-independent digest
worker      one connection per side, several blocks in flight; engine runs them
jobs        copy / resume / checksum with the journal
"""

TARGET_FORMATS = ("raw", "qcow2")  # formats a new target can be written in
# Seconds between flushes that make finished blocks durable (and recorded). A crash
# loses at most this much work; each flush makes the disk write out its cache and
# holds up the copy meanwhile (a second and more per GiB cached, measured here).
DEFAULT_CHECKPOINT = 30.0
# Seconds for each stage of connecting to a server: TCP, TLS handshake, NBD negotiation.
DEFAULT_CONNECT_TIMEOUT = 15.0
# Seconds without any reply from a side (a server that stopped answering, a network
# that dropped the connection silently) before a copy fails; it can be resumed.
DEFAULT_IO_TIMEOUT = 60.0
