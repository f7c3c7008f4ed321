"""Jobs: the journal that records them (journal.py)."""
