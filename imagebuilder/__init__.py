"""Inventory -> virtual hardware profile -> domain XML, and offline guest fix-ups.

Nothing here yet: the profile and the fix-ups come with the conversion pipeline.
"""
