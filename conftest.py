# Project-level conftest. The plugin itself is registered through the
# `pytest11` entry point in pyproject.toml (pip install -e .).
