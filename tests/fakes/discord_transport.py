"""
The fake Discord's HTTP side: a request matched to its route, with auth, rate-limit headers and the CDN.

Also the faults a test arms here: 429s on matching routes and refused message posts. A mixin of FakeDiscord,
which holds the state; the route table and the handlers are in discord_rest.py.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.fakes.discord_models import FakeFile, Json, route_bucket
from tests.fakes.discord_rest import DiscordError, FakeError, Handler, Request, json_response

log = logging.getLogger(__name__)


@dataclass
class RateLimitInjection:
    """The next `times` requests whose "METHOD /path" matches `pattern` are answered with 429."""

    pattern: re.Pattern[str]
    times: int
    retry_after: float


@dataclass
class PostFailure:
    """The next `times` message creates in a channel are answered with this error instead."""

    channel_id: int | None
    times: int
    status: int
    code: int
    message: str
    with_files: bool


class RestTransport:
    """Serves every REST request: the route table lookup, auth, rate-limit headers, injected faults, the CDN."""

    # State (self._routes, self._injections, self.requests, ...) lives on FakeDiscord.

    def inject_429(self, route_pattern: str, times: int = 1, retry_after: float = 0.05) -> None:
        """Answer the next `times` requests whose "METHOD /path" (path after /api/v10) matches the regex with 429."""
        self._injections.append(RateLimitInjection(re.compile(route_pattern), times, retry_after))

    def fail_posts(
        self,
        channel_id: int | None,
        times: int = 1,
        status: int = 503,
        code: int = 0,
        message: str = "Service Unavailable",
        *,
        with_files: bool = False,
    ) -> None:
        """Answer the next `times` message POSTs to a channel (None: any) with `status` and Discord's JSON `code`.

        with_files: only posts that upload files count (galleries, final images), so the switch can be armed
        before the thread that will receive them exists.
        """
        self._failures.append(PostFailure(channel_id, times, status, code, message, with_files))

    def take_failure(self, channel_id: int, has_files: bool) -> PostFailure | None:
        """The failure the next post to `channel_id` gets, if fail_posts() armed one (counted down)."""
        for failure in self._failures:
            if failure.channel_id not in (None, channel_id) or (failure.with_files and not has_files):
                continue
            if failure.times > 0:
                failure.times -= 1
                self.failed_posts.append((channel_id, failure.status))
                return failure
        return None

    # --- REST plumbing --------------------------------------------------------------------------------------------

    def _route(self, method: str, template: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def _ratelimit_headers(self, bucket: str, remaining: int, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.ratelimit_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    async def _read_body(self, request: web.Request) -> tuple[Json, dict[int, FakeFile]]:
        files: dict[int, FakeFile] = {}
        if request.content_type.startswith("multipart/"):
            payload: Json = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())
                elif m := re.fullmatch(r"files\[(\d+)\]", name):
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    files[int(m.group(1))] = FakeFile(part.filename or "file", bytes(await part.read()), ctype)
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw else {}), files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        method, full = request.method, request.path
        if full.startswith("/attachments/"):
            self.cdn_fetches += 1
            return self._cdn(full)
        path = full.removeprefix("/api/v10")
        self.requests.append((method, path))
        for inject in self._injections:
            if inject.times > 0 and inject.pattern.search(f"{method} {path}"):
                inject.times -= 1
                self.rate_limited_count += 1
                body = {"message": "You are being rate limited.", "retry_after": inject.retry_after, "global": False}
                headers = self._ratelimit_headers(route_bucket(path), 0, inject.retry_after)
                # discord.py retries a 429 only when it carries a Via header (otherwise it assumes Cloudflare).
                headers |= {"Via": "1.1 google", "Retry-After": str(inject.retry_after), "X-RateLimit-Scope": "user"}
                return json_response(body | {"code": 0}, 429, headers)
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match is None or route_method != method:
                continue
            try:
                if not path.startswith(("/webhooks/", "/interactions/")):
                    self._check_auth(request)
                payload, files = await self._read_body(request)
                req = Request(method, path, match, request.query, payload, files, request.headers)
                response = await handler(req)
            except DiscordError as exc:
                self.errors.append(FakeError(exc.status, method, path, exc.code, exc.message, exc.errors))
                body = {"code": exc.code, "message": exc.message}
                if exc.errors:
                    body["errors"] = exc.errors
                return json_response(body, exc.status)
            except Exception as exc:  # a bug in the fake must fail the test, not hang discord.py in 500 retries
                log.exception("fake discord failed on %s %s", method, path)
                self.internal_errors.append(f"{method} {path}: {exc!r}")
                return json_response({"code": 0, "message": f"fake internal error: {exc!r}"}, 400)
            response.headers.update(self._ratelimit_headers(route_bucket(regex.pattern), self.ratelimit_limit - 1, 1.0))
            return response
        self.unknown_routes.append((method, path))
        self.errors.append(FakeError(404, method, path, 0, "404: Not Found", {}))
        return json_response({"code": 0, "message": "404: Not Found"}, 404)

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    def _cdn(self, path: str) -> web.Response:
        parts = path.split("/")
        att = self._attachments.get(int(parts[3])) if len(parts) > 3 and parts[3].isdigit() else None
        if att is None:
            return web.Response(status=404)
        return web.Response(body=att.content, content_type=att.content_type or "application/octet-stream")
