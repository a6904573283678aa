"""Kept for old imports: redaction lives in `pytest_mxfp4.redact`."""

from __future__ import annotations

from ..redact import is_secret, is_secret_name, redact_argv, redact_env, redact_text  # noqa: F401
