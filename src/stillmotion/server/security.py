"""Safe defaults: bearer token, same-origin writes, and Host pinning for loopback binds (RELIABILITY 0.6).

- ``require_token``: when ``settings.api_token`` is set, every API route (but /health) needs
  ``Authorization: Bearer <token>``, compared in constant time; a token in the query string is refused. The
  OpenAPI document and its docs page need it too (``require_page_token``: there HTTP Basic with the token as
  password also works, so a browser can ask for it). A blank token is refused at start (``token_problem``).
- ``OriginGuard`` (pure ASGI middleware, covers the API and the Gradio UI alike):
  * a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without one, ``Referer``)
    names another origin (scheme, host or port) gets 403: a web page on another site cannot drive the local
    server (CSRF against localhost);
  * on a loopback bind, a request whose ``Host`` is not a loopback name gets 403: this stops DNS rebinding,
    where evil.example resolves to 127.0.0.1 and so looks "same-origin" to the browser;
  * a ``Host``, ``Origin`` or ``Referer`` that is malformed (bad port, unclosed IPv6 bracket, stray
    characters) or given twice gets 400 ``malformed_header``: ambiguous headers are never guessed at.
- No CORS middleware is installed, so browsers keep the same-origin policy for reads.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from stillmotion.config import Settings
from stillmotion.server.errors import ApiError, error_response, log_refusal

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
GUARDED_HEADERS = frozenset({"host", "origin", "referer"})
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_token", "api_key", "key"})

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="Required when the server has STILLMOTION_API_TOKEN.",
)
PAGE_CHALLENGE = {"WWW-Authenticate": 'Bearer, Basic realm="stillmotion API", charset="UTF-8"'}


def token_problem(settings: Settings) -> str | None:
    """Why the configured token cannot be used (set but blank), or None."""
    token = settings.api_token
    if token is not None and not token.strip():
        return (
            "STILLMOTION_API_TOKEN is set but blank: a token of spaces (or nothing) protects nothing. Set it "
            "to a long random secret, or unset it to serve on loopback without one."
        )
    return None


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


async def require_page_token(request: Request) -> None:
    """The docs page, its assets and /openapi.json: the bearer token, or HTTP Basic with the token as the
    password (any user name, as the web UI's login), which a browser asks for by itself."""
    settings: Settings = request.app.state.settings
    expected = settings.api_token
    if not expected:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            password = ""
        if hmac.compare_digest(password.encode(), expected.encode()):
            return
        raise ApiError(401, "unauthorized", "The API token is wrong.", headers=PAGE_CHALLENGE)
    credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=value) if value else None
    try:
        check_token(settings, request, credentials)
    except ApiError as exc:
        raise ApiError(401, exc.code, exc.message, headers=PAGE_CHALLENGE) from None


class MalformedHeader(ValueError):
    """A Host, Origin or Referer header that cannot be read as a URL origin (answered 400, never 500)."""

    def __init__(self, header: str, value: str, why: str) -> None:
        super().__init__(f"{header}: {why} (got {value[:100]!r}).")
        self.header = header


@dataclass(frozen=True)
class Origin:
    """An origin as browsers compare them: scheme, lower-case host and port (the default one filled in)."""

    scheme: str
    host: str
    port: int


# A Host header is a name or a bracketed IPv6 address, then an optional port: nothing else (no user info,
# path or spaces), so what the pin checks is exactly what the client connected to.
_HOST_HEADER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(url: str, header: str) -> Origin | None:
    """The origin of an http(s) URL; None for another scheme ('null', 'file:...'); MalformedHeader if broken.

    urllib raises ValueError for a bad port or an unclosed IPv6 bracket: that is the client's fault (400).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MalformedHeader(header, url, str(exc)) from None
    if parts.scheme not in _DEFAULT_PORTS:
        return None
    if not parts.hostname or parts.username is not None or port == 0:
        raise MalformedHeader(header, url, "not an http(s) URL with a host")
    return Origin(parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme])


def parse_host(value: str, scheme: str) -> Origin:
    """This server's origin as the client addressed it (the Host header); MalformedHeader if broken."""
    if not _HOST_HEADER.fullmatch(value):
        raise MalformedHeader("Host", value, "not a host name or address with an optional port")
    origin = parse_origin(f"{scheme}://{value}", "Host")
    assert origin is not None, "the scheme is http or https"
    return origin


def _single_headers(scope: Scope) -> dict[str, str]:
    """The headers the guard reads, each at most once: a repeated one is ambiguous, so it is refused."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        if name not in GUARDED_HEADERS:
            continue
        if name in found:
            raise MalformedHeader(name.title(), raw_value.decode("latin-1"), "given more than once")
        found[name] = raw_value.decode("latin-1")
    return found


class OriginGuard:
    """Refuse cross-origin writes, and foreign Host headers on loopback binds (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, pin_loopback_host: bool) -> None:
        self.app = app
        self.pin_loopback_host = pin_loopback_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            refusal = self._refusal(scope)
        except MalformedHeader as exc:
            refusal = (400, "malformed_header", str(exc), exc.header)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, code, message, field = refusal
        log_refusal(scope.get("method", "WEBSOCKET"), scope.get("path", ""), status, code, message)
        await error_response(status, code, message, field)(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str, str] | None:
        """(status, code, message, header) when the request is refused, else None."""
        headers = _single_headers(scope)
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        host_header = headers.get("host")
        own = parse_host(host_header, scheme) if host_header is not None else None
        if self.pin_loopback_host and (own is None or not is_loopback(own.host)):
            return (
                403,
                "forbidden_origin",
                f"Host {host_header!r} is not a loopback name; this server is bound to loopback "
                "(use http://127.0.0.1 or http://localhost).",
                "Host",
            )
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        if method not in UNSAFE_METHODS and method != "WEBSOCKET":
            return None
        for header in ("origin", "referer"):  # Origin when the browser sends it, else the Referer
            claimed = headers.get(header)
            if claimed is None:
                continue
            if own is None or parse_origin(claimed, header.title()) != own:
                return (
                    403,
                    "forbidden_origin",
                    f"Cross-origin request refused: {header.title()} {claimed[:100]!r} is not this server's "
                    "origin (scheme, host and port must all match).",
                    header.title(),
                )
            return None
        return None


# What a browser needs before it has logged in to the UI: the login page, its assets, the login itself. The
# API and the OpenAPI document check the token in their own routes.
_OPEN_PREFIXES = ("/api/", "/assets/", "/static/", "/svelte/", "/pwa_icon")
_OPEN_PATHS = frozenset(
    {
        "/",
        "/api",
        "/openapi.json",
        "/login",
        "/login/",
        "/logout",
        "/favicon.ico",
        "/theme.css",
        "/robots.txt",
        "/manifest.json",
        "/gradio_api/theme.css",
        "/gradio_api/login_check",
        "/gradio_api/login_check/",
    }
)


class LoginGate:
    """With a token, every UI route needs the UI's login (its session cookie) or the bearer token, except the
    login page and its assets: Gradio leaves some routes (session heartbeats, streams, cancel) open even with
    its login on, and only /health is meant to be open (docs/api.md)."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = "Log in to the UI first (password: the server's API token), or send the bearer token."
        log_refusal(scope.get("method", ""), scope.get("path", ""), 401, "unauthorized", message)
        await error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})(
            scope, receive, send
        )

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
            return True
        request = Request(scope)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), self.token.encode()):
            return True
        ui = getattr(scope["app"].state, "ui_app", None)
        if ui is None:
            return False
        for name in (f"access-token-{ui.cookie_id}", f"access-token-unsecure-{ui.cookie_id}"):
            cookie = request.cookies.get(name)
            if cookie is not None and cookie in ui.tokens:
                return True
        return False
