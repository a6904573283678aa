"""Keep secrets out of results, baselines and reports."""

from __future__ import annotations

import re

_SECRET = re.compile(r"(TOKEN|_KEY|KEY_|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if is_secret(k) else v) for k, v in env.items()}
