"""The dashboard's door: every route needs the cluster token (the pages can reach
everything the cluster runs). Accepted as an ``Authorization: Bearer <token>``
header, a ``?token=`` parameter, or the login cookie that a page visited with
``?token=`` (or the login form) sets. No credential: 401 (a page answers with the
login form); a wrong one: 403."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

__all__ = ["COOKIE", "TokenGuard", "login_page"]

COOKIE = "fedexec_dashboard"
_OPEN = frozenset({"/login"})


def _cookie_value(token: str) -> str:
    """What the cookie holds: a key derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"fedexec-dashboard-cookie", hashlib.sha256).hexdigest()


def login_page(message: str, next_path: str = "/", status: int = 401) -> HTMLResponse:
    """The login form (a page asked for without a valid credential)."""
    from ._html import layout

    body = (f"<h2>Sign in</h2><p>{message}</p>"
            '<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{_escape(next_path)}">'
            '<label>Cluster token <input type="password" name="token" autofocus></label> '
            '<button type="submit">Sign in</button></form>'
            "<p>The token is in <code>$FEDEXEC_HOME/token</code> on the head's machine "
            "(<code>fedexec dashboard</code> prints a URL carrying it).</p>")
    return HTMLResponse(layout("Sign in", body, nav=False), status_code=status)


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _safe_next(path: str) -> str:
    return path if path.startswith("/") and not path.startswith("//") else "/"


class TokenGuard:
    """Starlette ``http`` middleware checking the token on every request."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._cookie = _cookie_value(token)

    def _check(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token.encode())

    def set_cookie(self, response: Response) -> Response:
        response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="strict")
        return response

    async def login(self, request: Request) -> Response:
        """POST /login: the form's token → the cookie, then back to ``next``."""
        # The form is urlencoded: parsed here (starlette's form() needs python-multipart).
        form = parse_qs((await request.body())[:65536].decode(errors="replace"))
        token = form.get("token", [""])[0]
        nxt = _safe_next(form.get("next", ["/"])[0])
        if not self._check(token):
            return login_page("That is not this cluster's token.", nxt, status=403)
        return self.set_cookie(RedirectResponse(nxt, status_code=303))

    async def __call__(self, request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path in _OPEN:
            return await call_next(request)
        header = request.headers.get("authorization", "")
        given: str | None = None
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        elif "token" in request.query_params:
            given = request.query_params["token"]
        if given is not None:
            if not self._check(given):
                return self._refuse(request, "The token given is not this cluster's.", 403)
            if "token" in request.query_params and self._is_page(request):
                # Set the cookie and drop the token from the address bar and history.
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                return self.set_cookie(RedirectResponse(target, status_code=303))
            return await call_next(request)
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            if hmac.compare_digest(cookie.encode(), self._cookie.encode()):
                return await call_next(request)
            return self._refuse(request, "The login cookie is not this cluster's "
                                         "(was the cluster restarted?); sign in again.", 403)
        return self._refuse(request, "This dashboard needs the cluster token.", 401)

    @staticmethod
    def _is_page(request: Request) -> bool:
        path = request.url.path
        return request.method == "GET" and not path.startswith("/api/") and path != "/metrics"

    def _refuse(self, request: Request, message: str, status: int) -> Response:
        if self._is_page(request):
            return login_page(message, request.url.path, status=status)
        headers = {"WWW-Authenticate": 'Bearer realm="fedexec"'} if status == 401 else {}
        return JSONResponse({"error": message + " Pass it as 'Authorization: Bearer "
                                                "<token>' or ?token=<token>."},
                            status_code=status, headers=headers)

    def __repr__(self) -> str:  # never show the token
        return "TokenGuard(...)"


