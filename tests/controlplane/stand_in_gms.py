"""A DataHub GMS on 127.0.0.1 for the upstream tests that need to shape its GraphQL answers
(pages of listExecutionRequests): /config as DataHub answers it, batchGet with no entity, any
other write taken, and GraphQL answered by the subclass's graphql()."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.testing import ControlPlaneHandle, running_controlplane
from tests.http_handler import QuietHandler


class StandInGms:
    """Started at once; close() stops it. Subclasses set their state before calling __init__."""

    def __init__(self) -> None:
        server = self

        class Handler(QuietHandler):
            def answer_json(self, code: int, body: Any) -> None:
                self.answer(code, json.dumps(body).encode(), {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                if self.path.startswith("/config"):
                    return self.answer_json(200, {"noCode": "true", "versions": {"acryldata/datahub": {"version": "v1.0.0"}}})
                return self.answer_json(404, {"status": 404, "message": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/api/graphql"):
                    return self.answer_json(200, {"data": server.graphql(json.loads(body))})
                if "batchGet" in self.path:
                    return self.answer_json(200, [])
                return self.answer_json(200, {"value": "ok"})

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def graphql(self, request: dict[str, Any]) -> dict[str, Any]:
        """The `data` of the answer to REQUEST (a GraphQL request's JSON body)."""
        raise NotImplementedError

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Iterator[ControlPlaneHandle]:
    """Our control plane, one for a test module (the upstream tests use pools of their own)."""
    with running_controlplane(Path(tmp_path_factory.mktemp("ours"))) as handle:
        yield handle
