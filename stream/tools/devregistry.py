"""A minimal Confluent-compatible schema registry for tests and local tries (not for production).

Confluent's registry is not on Maven Central or PyPI and Karapace cannot be installed here, so tests of
the Confluent wire format talk to this: `POST /subjects/{subject}/versions` registers a schema and
returns its id (the same schema text gets the same id), `GET /schemas/ids/{id}` returns it, anything
unknown answers 404 with the registry's error codes. Binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
from aiohttp import web

# the registry's own error codes for a missing schema and a bad request
ERROR_SCHEMA_NOT_FOUND = 40403
ERROR_INVALID_SCHEMA = 42201


class DevRegistry:
    """Schemas by id, in memory, served over HTTP from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.url = ""
        # an outage on demand: every request answers 503 while True
        self.unavailable = False
        # when the outage first refused a request (time.monotonic()), None before
        self.first_refused_at: float | None = None

    def register(self, schema: str | dict[str, Any], subject: str = "conversions-value") -> int:
        """Register a schema directly (no HTTP); return its id."""
        text = schema if isinstance(schema, str) else orjson.dumps(schema).decode()
        with self._lock:
            if text not in self._ids:
                new_id = len(self._ids) + 1
                self._ids[text] = new_id
                self._schemas[new_id] = text
            return self._ids[text]

    async def _post_version(self, request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read())
            text = doc["schema"]
            orjson.loads(text)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error_code": ERROR_INVALID_SCHEMA, "message": "invalid schema"}, status=422)
        return web.json_response({"id": self.register(text, request.match_info["subject"])})

    async def _get_by_id(self, request: web.Request) -> web.Response:
        if self.unavailable:
            if self.first_refused_at is None:
                self.first_refused_at = time.monotonic()
            return web.json_response({"error_code": 50301, "message": "unavailable"}, status=503)
        try:
            schema_id = int(request.match_info["id"])
        except ValueError:
            schema_id = -1
        with self._lock:
            text = self._schemas.get(schema_id)
        if text is None:
            return web.json_response({"error_code": ERROR_SCHEMA_NOT_FOUND, "message": "Schema not found"},
                                     status=404)
        return web.json_response({"schema": text})

    def __enter__(self) -> DevRegistry:
        self._thread = threading.Thread(target=self._serve, name="dev-registry", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("dev registry did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/subjects/{subject}/versions", self._post_version)
        app.router.add_get("/schemas/ids/{id}", self._get_by_id)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        loop.run_until_complete(site.start())
        server = site._server  # the bound socket tells the port when 0 was asked
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._ready.set()
        loop.run_forever()
        loop.close()
