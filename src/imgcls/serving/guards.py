"""What protects the server before a request reaches a route: the upload size limit (413 before the body is
read whole), a read timeout for bodies that trickle in (408), and the bearer token (401).

A refused body is drained (read and thrown away, up to DRAIN_LIMIT bytes) after the answer is sent, so a
client that is still sending receives the 413 instead of a broken connection; memory stays flat.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

# Endpoints anyone may call even when a token is set: the page itself (it asks for the token), health, docs.
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")
DRAIN_LIMIT = 64 * 2**20


async def _send_json(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyRefused(Exception):
    """The body broke a limit while being read (raised from `receive`; routes answer it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class RequestGuard:
    """ASGI middleware: token, declared and streamed body size, body read timeout; and every response's status
    and latency reported to `observe(path, status, seconds)`."""

    def __init__(self, app, max_body_bytes: int, read_timeout_s: float, token: str | None, observe=None):
        self.app, self.max_body_bytes, self.read_timeout_s, self.token = app, max_body_bytes, read_timeout_s, token
        self.observe = observe or (lambda path, status, seconds: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, observed_send)
        finally:
            self.observe(scope["path"], status[0], time.perf_counter() - started)

    async def _guarded(self, scope, receive, send):
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
            await _send_json(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                             [(b"www-authenticate", b"Bearer")])
            return await self._drain(receive)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_json(send, 413, self._too_large())
            return await self._drain(receive)
        state = {"received": 0, "done": False, "started": False}

        async def limited_receive():
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                raise BodyRefused(408, f"the request body did not arrive within {self.read_timeout_s:.0f} s") \
                    from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["received"] > self.max_body_bytes:
                    raise BodyRefused(413, self._too_large())
            elif message["type"] == "http.disconnect":
                state["done"] = True
            return message

        async def tracking_send(message):
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyRefused as refused:
            if not state["started"]:
                await _send_json(send, refused.status, refused.message)
        if not state["done"]:
            await self._drain(receive)

    def _too_large(self) -> str:
        return f"the upload is larger than the {self.max_body_bytes / 2**20:g} MB allowed (--max-upload-mb)"

    async def _drain(self, receive) -> None:
        """Read and discard what the client still sends (bounded in bytes and time)."""
        drained = 0
        while drained <= DRAIN_LIMIT:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _authorized(self, headers: dict) -> bool:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        return (self.token is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(credential.strip().encode(), self.token.encode()))
