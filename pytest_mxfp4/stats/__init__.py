"""Statistics: numbers in, numbers out; no wording, no I/O."""
