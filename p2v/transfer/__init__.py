"""The shared transfer engine: every job that moves a disk goes through here.

endpoints/  one interface, file / NBD / null implementations, and qemu-nbd for formats
extents     what a disk holds where; plan: extents -> per-block work
blockhash   the format-independent digest
worker      one connection per side, several blocks in flight; engine runs them
jobs        copy / resume / checksum with the journal
"""

TARGET_FORMATS = ("raw", "qcow2")  # formats a new target can be written in
