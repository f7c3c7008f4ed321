"""`p2v convert`: from a server's disks (through the agent, or images) to a KVM guest.

disks.py: the source disks and their private overlays. plan.py: what will be done,
decided before any copy. pipeline.py: the steps, each recorded in the journal
(the boot check is p2v.host.bootcheck's, which restores share).
"""

DEFAULT_BOOT_TIMEOUT = 600.0  # seconds the boot check waits for a login prompt
# What `p2v convert --resume JOB` may set anew; every other option is the job's own.
RESUME_CHANGES = ("bwlimit", "connect_timeout", "io_timeout", "boot_timeout")
