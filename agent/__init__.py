"""The p2v agent: runs on the physical server from the agent ISO.

It imports nothing of the rest of the toolkit and needs only the standard library,
pyudev and pyparted, because it runs from a small live image.
"""

__version__ = "0.1.0"
