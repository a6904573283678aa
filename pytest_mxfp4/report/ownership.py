"""Which results pages pytest-mxfp4 may overwrite.

Every page it writes ends with PAGE_MARK. An existing file without that line
is someone's hand-kept page: `pytest-mxfp4 report` and `--perf-report`
refuse to replace it unless told to (`--force`)."""

from __future__ import annotations

from pathlib import Path

from pytest_mxfp4.errors import PerfUserError

PAGE_MARK = "<!-- written by pytest-mxfp4; `pytest-mxfp4 report` regenerates this page -->"


def mark(text: str) -> str:
    return text if PAGE_MARK in text else text.rstrip("\n") + "\n\n" + PAGE_MARK + "\n"


def check_may_overwrite(path: Path | str, force: bool = False, how: str = "pass --force") -> None:
    """Raise PerfUserError when `path` exists and is not a page we wrote."""
    p = Path(path)
    if force or not p.exists():
        return
    if p.is_dir():
        raise PerfUserError(f"{p}: is a directory, not a results page")
    try:
        with open(p, "rb") as f:
            head = f.read(4 * 1024 * 1024)
    except OSError as e:
        raise PerfUserError(f"{p}: cannot read the existing page ({e.strerror})") from None
    if PAGE_MARK.encode() not in head:
        raise PerfUserError(f"{p}: exists and was not written by pytest-mxfp4 (a hand-kept page?); not "
                            f"overwriting it: {how} to replace it, or write elsewhere")
