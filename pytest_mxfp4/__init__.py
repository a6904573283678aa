"""pytest-mxfp4: a performance-regression gate for LLM serving engines."""

__version__ = "0.1.0"
