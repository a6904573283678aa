"""FAKE GitHub REST API on 127.0.0.1, for the CI scripts' tests: the real API
cannot be reached from here. Implements only the calls scripts/ci/ makes
(PR head, issue comments, issues, artifacts) and records the Authorization
headers it saw. With `artifact_store` (the act test's local store,
STORE/<run id>/<name>/...) it lists and zips the artifacts found there, as
the artifacts API does. Never used for anything but those tests."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeGitHub:
    def __init__(self, artifact_store: Path | None = None) -> None:
        self.artifact_store = artifact_store
        self.pulls: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}
        self.issues: list[dict] = []
        self.artifacts: list[dict] = []
        self.created_pulls: list[dict] = []  # POST /pulls (the baseline bot's PR)
        self.zips: dict[str, bytes] = {}
        self.auth_headers: list[str] = []
        self._next_id = 100
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, payload) -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                if not isinstance(payload, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                n = int(self.headers.get("Content-Length", 0))
                return json.loads(self.rfile.read(n) or b"{}")

            def _route(self, method: str):
                fake.auth_headers.append(self.headers.get("Authorization", ""))
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                parts = u.path.strip("/").split("/")
                if parts[0] == "zip" and len(parts) == 3 and fake.artifact_store and parts[1].isdigit() \
                        and parts[2] not in ("", ".", ".."):
                    return self._send(200, fake._zip_stored(parts[1], parts[2]))
                if parts[0] == "zip":
                    return self._send(200, fake.zips.get(parts[1], b""))
                if parts[:3] != ["repos", "o", "r"]:
                    return self._send(404, {"message": "Not Found"})
                rest = parts[3:]
                if method == "POST" and rest == ["pulls"]:
                    b = self._body()
                    pr = {"number": 200 + len(fake.created_pulls), "labels": [], **b}
                    fake.created_pulls.append(pr)
                    return self._send(201, pr)
                if method == "POST" and rest[0] == "issues" and len(rest) == 3 and rest[2] == "labels":
                    for pr in fake.created_pulls:
                        if pr["number"] == int(rest[1]):
                            pr["labels"] += self._body()["labels"]
                            return self._send(200, pr["labels"])
                    return self._send(404, {})
                if method == "GET" and rest[0] == "pulls":
                    pr = fake.pulls.get(int(rest[1]))
                    return self._send(200, pr) if pr else self._send(404, {})
                if rest[0] == "issues" and len(rest) == 3 and rest[2] == "comments":
                    n = int(rest[1])
                    lst = fake.comments.setdefault(n, [])
                    if method == "GET":
                        page, per = int(q.get("page", 1)), int(q.get("per_page", 30))
                        return self._send(200, lst[(page - 1) * per: page * per])
                    fake._next_id += 1
                    c = {"id": fake._next_id, "body": self._body()["body"], "user": {"type": "Bot"}}
                    lst.append(c)
                    return self._send(201, c)
                if rest[:2] == ["issues", "comments"] and method == "PATCH":
                    cid = int(rest[2])
                    for lst in fake.comments.values():
                        for c in lst:
                            if c["id"] == cid:
                                c["body"] = self._body()["body"]
                                return self._send(200, c)
                    return self._send(404, {})
                if rest == ["issues"]:
                    if method == "GET":
                        lab = q.get("labels")
                        return self._send(200, [i for i in fake.issues if i["state"] == q.get("state", "open")
                                                and (not lab or lab in i["labels"])])
                    b = self._body()
                    issue = {"number": len(fake.issues) + 1, "state": "open", "title": b["title"],
                             "body": b["body"], "labels": b.get("labels", [])}
                    fake.issues.append(issue)
                    return self._send(201, issue)
                if rest[:2] == ["actions", "artifacts"] and method == "GET":
                    arts = fake._stored(q.get("name")) if fake.artifact_store else fake.artifacts
                    return self._send(200, {"artifacts": arts})
                return self._send(404, {"message": "Not Found"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PATCH(self):
                self._route("PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _stored(self, name: str | None) -> list[dict]:
        out = []
        for d in sorted(self.artifact_store.glob("*/*")):
            if d.is_dir() and (name is None or d.name == name):
                when = datetime.fromtimestamp(d.stat().st_mtime, timezone.utc).isoformat()
                out.append({"id": int(d.parent.name) * 1000 + len(out), "name": d.name, "expired": False,
                            "created_at": when, "workflow_run": {"id": int(d.parent.name)},
                            "archive_download_url": f"{self.url}/zip/{d.parent.name}/{d.name}"})
        return out

    def _zip_stored(self, run: str, name: str) -> bytes:
        d = self.artifact_store / run / name
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for f in sorted(d.rglob("*")) if d.is_dir() else []:
                if f.is_file():
                    z.write(f, f.relative_to(d).as_posix())
        return buf.getvalue()

    def __enter__(self) -> "FakeGitHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
