"""Formats: every on-disk format and the typed records it holds (stdlib + yaml only)."""
