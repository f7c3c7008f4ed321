"""Jobs: the journal that records them (journal.py, its schema in schema.py), the
processes that run them (owner.py), and schedules (schedules.py) with their
triggers (triggers.py), which `p2v scheduler` (scheduler.py) runs."""
