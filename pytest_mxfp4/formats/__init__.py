"""Formats: every on-disk format (matrix, results, baselines) and the typed records it holds; dicts only at each format's JSON/YAML boundary."""
