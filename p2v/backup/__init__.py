"""Backups of virtual machines: full, incremental and differential, through libvirt's
backup API; restore, verify and the chain's catalog."""
