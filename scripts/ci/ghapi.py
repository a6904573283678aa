"""A small GitHub REST client for the CI scripts (stdlib only: runs on a bare
GitHub-hosted runner before anything is installed).

Token from $GH_TOKEN (or $GITHUB_TOKEN), API root from $GITHUB_API_URL
(default https://api.github.com; tests point it at a FAKE on 127.0.0.1).
The token is sent only in the Authorization header, never printed; errors
name the method and path, never the token."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any


class GitHubError(Exception):
    pass


class GitHub:
    def __init__(self, repo: str | None = None, token: str | None = None, api: str | None = None):
        self.repo = repo or os.environ.get("REPO") or os.environ.get("GITHUB_REPOSITORY") or ""
        self.token = token or os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN") or ""
        self.api = (api or os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
        if not self.repo or "/" not in self.repo:
            raise GitHubError("REPO (owner/name) is not set")
        if not self.token:
            raise GitHubError("GH_TOKEN is not set")

    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        url = path if path.startswith("http") else f"{self.api}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "pytest-mxfp4-ci",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raise GitHubError(f"{method} {path}: HTTP {e.code}") from None
        except urllib.error.URLError as e:
            raise GitHubError(f"{method} {path}: {e.reason}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def paged(self, path: str, limit_pages: int = 20) -> list[Any]:
        out: list[Any] = []
        sep = "&" if "?" in path else "?"
        for page in range(1, limit_pages + 1):
            items = self.request("GET", f"{path}{sep}per_page=100&page={page}")
            if not items:
                break
            out += items
            if len(items) < 100:
                break
        return out


def set_output(**values: str) -> None:
    """Step outputs ($GITHUB_OUTPUT), or stdout outside Actions."""
    path = os.environ.get("GITHUB_OUTPUT")
    lines = "".join(f"{k}={v}\n" for k, v in values.items())
    if path:
        with open(path, "a") as f:
            f.write(lines)
    else:
        print(lines, end="")


def summary(text: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
