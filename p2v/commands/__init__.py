"""One module per group of verbs; each adds its parsers to the `p2v` command line."""
