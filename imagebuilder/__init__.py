"""Inventory -> virtual hardware profile -> domain XML, and offline guest fix-ups.

profile.py: the matching VM as a record (pure). domain.py: its libvirt XML (pure).
The guest fix-ups come with the conversion pipeline.
"""
