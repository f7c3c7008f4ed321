"""`p2v snapshot`: a machine's whole state at one instant (disks, memory, CPU and
device state, UEFI variables), taken live, gone back to, and deleted with its layers
merged. plan.py: names, overlays and the snapshot's XML; checks.py: what is refused
before anything changes; job.py: create, revert and delete as jobs; listing.py: the
snapshots of a VM, as a table or a tree."""
