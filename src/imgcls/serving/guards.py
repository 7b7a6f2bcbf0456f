"""What protects the server before a request reaches a route: the upload size limit (413 as soon as the declared
or the received length passes it, never after reading the body whole), a deadline for the whole body (408: a body
that trickles in a byte at a time is cut off, not only one that stalls), and the bearer token (401).

An answer sent before its request's body has all arrived says `Connection: close`, so the server stops reading
there: uvicorn would otherwise read and discard the rest of the body after the answer, with no bound on its size
or on how slowly it comes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

# Endpoints anyone may call even when a token is set: the page itself (it asks for the token), health, docs.
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")


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
            return await _send_json(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                    [(b"www-authenticate", b"Bearer")])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _send_json(send, 413, self._too_large())
        loop = asyncio.get_running_loop()
        has_body = (declared.isdigit() and int(declared) > 0) or "transfer-encoding" in headers
        deadline, state = loop.time() + self.read_timeout_s, {"received": 0, "done": not has_body, "started": False}

        async def limited_receive():
            if state["done"]:
                return await receive()  # past the body only a disconnect comes, whenever it does
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise BodyRefused(408, f"the request body did not arrive within {self.read_timeout_s:g} s "
                                       f"(--timeout-s)") from None
            state["done"] = message["type"] != "http.request" or not message.get("more_body", False)
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_body_bytes:
                raise BodyRefused(413, self._too_large())
            return message

        async def closing_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
                if not state["done"]:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, closing_send)
        except BodyRefused as refused:  # a route that let it through: answer it here
            if not state["started"]:
                await _send_json(send, refused.status, refused.message)

    def _too_large(self) -> str:
        return f"the upload is larger than the {self.max_body_bytes / 2**20:g} MB allowed (--max-upload-mb)"

    def _authorized(self, headers: dict) -> bool:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        return (self.token is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(credential.strip().encode(), self.token.encode()))
