"""`pytest-mxfp4 observe LOGFILE [--engine vllm]`: print what a server log proves."""

from __future__ import annotations

import json
import sys

from pytest_mxfp4.observe.logs import ENGINES, observe_text

_PROG = "pytest-mxfp4 observe"


def observe_command(path: str, engine: str = "vllm") -> int:
    """Print the observed facts of log file `path` as JSON; 0 on success, 2 on a
    problem the user can fix (missing/unreadable file, unknown engine)."""
    if engine not in ENGINES:
        print(f"{_PROG}: unknown engine {engine!r} (known: {', '.join(ENGINES)})", file=sys.stderr)
        return 2
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        print(f"{_PROG}: {path}: not found", file=sys.stderr)
        return 2
    except IsADirectoryError:
        print(f"{_PROG}: {path}: is a directory, not a log file", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{_PROG}: {path}: cannot read ({e.strerror or e})", file=sys.stderr)
        return 2
    if b"\x00" in data[:1 << 20]:
        print(f"{_PROG}: {path}: not a text log (binary data); pass the server's log file", file=sys.stderr)
        return 2
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        print(f"{_PROG}: {path}: is empty; nothing to observe", file=sys.stderr)
        return 2
    facts = observe_text(text, engine=engine)
    print(json.dumps(facts.to_dict(), indent=2, sort_keys=True))
    return 0
