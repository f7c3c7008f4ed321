"""p2v: the conversion host side of the p2v toolkit (CLI, pipelines, transfer engine, journal)."""

__version__ = "0.1.0"
