"""Writing files so that nothing is ever half-written or unreadable to a
teammate: every file the plugin writes (baselines, results, pages, logs of
runs) goes through `write_atomic`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# mkstemp creates 0600; results, pages and baselines are shared (a teammate,
# a CI artifact step), so they get the usual 0644 less the process umask.
FILE_MODE = 0o644


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path | str, text: str) -> None:
    """Write to a temp file in the same directory and rename: a crash never
    leaves a half-written file, and a reader sees the old or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
