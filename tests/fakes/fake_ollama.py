"""FakeOllama: an aiohttp server on 127.0.0.1 speaking Ollama's /api/chat, /api/tags and /api/version.

Replies are scripted per model (a queue) or computed by a handler; a reply can be valid JSON, garbage, an HTTP
error or a hang. Every /api/chat request body is recorded so tests can assert what the client sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_MODELS = ("hermes3:8b", "phi4:14b", "minicpm-v:latest")


@dataclass(frozen=True)
class Reply:
    """One scripted answer: `content` as the assistant message, or an HTTP error, or a hang."""

    content: str = ""
    status: int = 200
    error: str = ""
    hang: bool = False

    @classmethod
    def json(cls, obj: Any) -> Reply:
        return cls(content=json.dumps(obj))

    @classmethod
    def text(cls, text: str) -> Reply:
        return cls(content=text)

    @classmethod
    def http(cls, status: int, error: str = "internal error") -> Reply:
        return cls(status=status, error=error)

    @classmethod
    def hanging(cls) -> Reply:
        return cls(hang=True)


Handler = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]


@dataclass
class FakeOllama:
    """A scriptable Ollama on loopback; use `async with FakeOllama() as fake:` and point a client at fake.url."""

    models: tuple[str, ...] = DEFAULT_MODELS
    handler: Handler | None = None
    version: str = "0.6.3-fake"
    requests: list[dict[str, Any]] = field(default_factory=list)
    _queues: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    port: int = 0

    def script(self, model: str, *replies: Reply | dict[str, Any] | str) -> None:
        """Queue answers for a model, in order; dicts become JSON, strings raw content."""
        for r in replies:
            if isinstance(r, dict):
                r = Reply.json(r)
            elif isinstance(r, str):
                r = Reply.text(r)
            self._queues[model].append(r)

    def chats(self, model: str | None = None) -> list[dict[str, Any]]:
        """Recorded /api/chat bodies (optionally of one model)."""
        return [r for r in self.requests if model is None or r.get("model") == model]

    def _installed(self, model: str) -> bool:
        return model in self.models or f"{model}:latest" in self.models

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        model = str(body.get("model", ""))
        if not self._installed(model):
            # what Ollama answers for a model that was never pulled
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if self._queues[model]:
            reply = self._queues[model].popleft()
        elif self.handler is not None:
            out = self.handler(body)
            reply = await out if asyncio.iscoroutine(out) else out  # type: ignore[assignment]
        else:
            return web.json_response({"error": f"FakeOllama: nothing scripted for {model}"}, status=500)
        if reply.hang:
            await self._release.wait()
            return web.json_response({"error": "released"}, status=503)
        if reply.status != 200:
            return web.json_response({"error": reply.error}, status=reply.status)
        return web.json_response(
            {
                "model": model,
                "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": reply.content},
                "done": True,
                "done_reason": "stop",
                "total_duration": 1,
                "eval_count": 1,
            }
        )

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 1,
                        "digest": "0" * 64,
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "8B"},
                    }
                    for m in self.models
                ]
            }
        )

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/version", self._version)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOllama:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
