"""Work migration: one running program moved to another machine with CRIU."""
