"""Adapters to the components the toolkit drives: libvirt hosts, and the agent on a
server (its disks, its announcements); bootcheck: a guest started headless and its
serial console read until it has booted (a conversion's result, a restore drill)."""
