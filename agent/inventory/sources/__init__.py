"""One small module per source of facts (sysfs, /proc, efivars, tools)."""
