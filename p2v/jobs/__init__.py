"""Jobs: the journal that records them (journal.py) and its schema (schema.py)."""
