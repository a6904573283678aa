"""An already-running server (`--perf-base-url` or runner: external)."""

from __future__ import annotations

from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.servers.base import Server, ServerInfo
from pytest_mxfp4.servers.health import http_ok


class ExternalServer(Server):
    def __init__(self, name: str, base_url: str, health_path: str = "/health"):
        self.name = name
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.health_path = health_path
        self.info: ServerInfo | None = None

    def start(self) -> ServerInfo:
        if not (http_ok(self.base_url + self.health_path) or http_ok(self.base_url + "/v1/models")):
            raise ServerError(
                f"server {self.name!r}: nothing healthy at {self.base_url} "
                f"(tried {self.health_path} and /v1/models). Is the server running and the URL right?"
            )
        self.info = ServerInfo(name=self.name, kind="external", base_url=self.base_url)
        return self.info

    def stop(self) -> None:
        """Not ours to stop."""
