"""Errors that carry a message meant for a person, never a traceback.

`PerfUserError` is raised for anything the user can fix (config, baseline file,
flags, a misbehaving server). The pytest plugin turns it into a one-line
`pytest.UsageError` or a test failure; the CLI prints it and exits 2.
Every message is passed through `redact.redact_text`, so a secret that a
server echoed into its log never reaches a terminal, junit.xml or a report
through an error.
"""

from pytest_mxfp4.redact import redact_text


class PerfUserError(Exception):
    """A problem the user can fix; the message says where and what to do."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(PerfUserError):
    """The matrix file is invalid. Message names the file and the field."""


class BaselineError(PerfUserError):
    """A baseline file is unreadable or malformed."""


class ServerError(PerfUserError):
    """A server failed to start, died, or answered badly."""


class MeasurementError(PerfUserError):
    """One sample could not be measured (wrong token count, broken stream ...)."""
