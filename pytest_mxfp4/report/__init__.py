"""Reports: every format is rendered from the same SessionResults."""
