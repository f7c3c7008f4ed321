"""Jobs: the journal that records them (journal.py, its schema in schema.py), the
processes that run them (owner.py), and when scheduled jobs run (triggers.py)."""
