"""Safe defaults: bearer token, same-origin writes, and Host pinning for loopback binds (RELIABILITY 0.6).

- ``require_token``: when ``settings.api_token`` is set, every API route (but /health) needs
  ``Authorization: Bearer <token>``, compared in constant time; a token in the query string is refused.
- ``OriginGuard`` (pure ASGI middleware, covers the API and the Gradio UI alike):
  * a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` or ``Referer`` names another origin
    gets 403: a web page on another site cannot drive the local server (CSRF against localhost);
  * on a loopback bind, a request whose ``Host`` is not a loopback name gets 403: this stops DNS rebinding,
    where evil.example resolves to 127.0.0.1 and so looks "same-origin" to the browser.
- No CORS middleware is installed, so browsers keep the same-origin policy for reads.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from stillmotion.config import Settings
from stillmotion.server.errors import ApiError, error_response

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_token", "api_key", "key"})

bearer_scheme = HTTPBearer(
    auto_error=False, description="Required when the server has STILLMOTION_API_TOKEN."
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (the only binds allowed without a token)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(
    settings: Settings, request: Request, credentials: HTTPAuthorizationCredentials | None
) -> None:
    """Raise 401 unless the request carries the configured bearer token (no-op without one)."""
    expected = settings.api_token
    if not expected:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if QUERY_TOKEN_NAMES.intersection(request.query_params.keys()):
        raise ApiError(
            401,
            "unauthorized",
            "Tokens in the query string are refused (they end up in logs); "
            "send 'Authorization: Bearer <token>'.",
            headers=challenge,
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401, "unauthorized", "Missing 'Authorization: Bearer <token>' header.", headers=challenge
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "The API token is wrong.", headers=challenge)


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> None:
    """FastAPI dependency wrapping ``check_token`` with the app's settings."""
    check_token(request.app.state.settings, request, credentials)


def _origin_of(url: str) -> tuple[str, str] | None:
    """('http', 'host:port') of a URL, or None when it is not a usable http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = (parts.hostname or "").lower()
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    return parts.scheme, f"{host}:{port}"


class OriginGuard:
    """Refuse cross-origin writes, and foreign Host headers on loopback binds (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, pin_loopback_host: bool) -> None:
        self.app = app
        self.pin_loopback_host = pin_loopback_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host_header = headers.get("host", "")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        own = _origin_of(f"{scheme}://{host_header}") if host_header else None
        reason = None
        if self.pin_loopback_host and (own is None or not is_loopback(own[1].rsplit(":", 1)[0])):
            reason = (
                f"Host {host_header!r} is not a loopback name; this server is bound to loopback "
                "(use http://127.0.0.1 or http://localhost)."
            )
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        if reason is None and (method in UNSAFE_METHODS or method == "WEBSOCKET"):
            claimed = headers.get("origin") or headers.get("referer")
            if claimed is not None:
                claimed_origin = _origin_of(claimed)
                if own is None or claimed_origin is None or claimed_origin[1] != own[1]:
                    reason = f"Cross-origin request refused: origin {claimed[:100]!r} is not this server's."
        if reason is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = error_response(403, "forbidden_origin", reason)
        await response(scope, receive, send)
