"""Adapters to the components the toolkit drives: libvirt hosts, and the agent on a
server (its disks, its announcements)."""
