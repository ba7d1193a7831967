"""A native ASGI fast path for long-lived stream endpoints (SSE), in front of Django's handler.

Django's ``ASGIHandler`` hands every request to a thread at least twice: the sync receivers of
``request_started``/``request_finished`` and every ``MiddlewareMixin`` hook run through
``sync_to_async`` on a per-request executor thread.  For a reconnect storm (thousands of
clients opening a stream at once after a replica drains) those hand-offs, not the stream,
limit how many new streams one worker accepts per second.

:class:`StreamRouter` serves a few exact paths by calling their **async** Django view on the
event loop, and passes every other request (and every non-HTTP scope) to the Django
application unchanged::

    application = ProtocolTypeRouter({
        "http": StreamRouter(get_asgi_application(), {"/messages/stream/": views.stream}),
        ...
    })

What a fast-path request goes through (and what it skips) is explicit:

* the request is a real :class:`~django.core.handlers.asgi.ASGIRequest` (``request.GET``,
  ``request.headers``, ``request.get_host()`` work as usual); its body is not read, so route
  only ``GET`` endpoints here;
* the ``process_request``/``process_response`` hooks of the middleware in ``middleware`` run
  inline on the event loop.  The default is the entries of ``settings.MIDDLEWARE`` that are in
  :data:`INLINE_SAFE_MIDDLEWARE` (pure header and host logic, no I/O): host validation
  (``ALLOWED_HOSTS``), HTTPS redirect, ``nosniff``/``Referrer-Policy``/COOP/HSTS and
  ``X-Frame-Options``.  Session, authentication, CSRF and ``LoginRequiredMiddleware`` are
  skipped; by default a fast-path request has no ``request.session`` and no ``request.user``;
* ``request_started``/``request_finished`` are not sent (no ORM use on the event loop);
* the client's disconnect cancels the view's stream, as under Django's handler.

**Streams that belong to a user** (``auth=True`` for every route, or ``auth=[paths]``)::

    StreamRouter(app, {"/messages/stream/mine/": views.my_stream}, auth=True)

    async def my_stream(request):
        user = await request.auser()
        if not user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
        ...

On those routes the request gets what ``SessionMiddleware`` and ``AuthenticationMiddleware``
would give it, read-only and without blocking the event loop:

* ``request.session`` is the configured engine's store for the session cookie, loaded lazily:
  nothing is read (and no thread is used) until the view asks.  Use its async API
  (``await request.session.aget(key)``); sync access before an async load raises
  :class:`~django.core.exceptions.SynchronousOnlyOperation` on the event loop instead of doing
  blocking I/O there.  The store never writes: ``save``/``create``/``delete`` (and their async
  twins) do nothing, so a stream never rotates, extends or deletes a session and never sends
  ``Set-Cookie``.  ``Vary: Cookie`` is added when the session was read, as ``SessionMiddleware``
  does; resolve the user before returning the response (headers leave with it);
* ``await request.auser()`` is Django's ``aget_user()`` on that store (session hash checked;
  a session whose hash no longer matches is anonymous, and the flush Django would do is left
  to the next regular request).  The result is cached, after which ``request.user`` returns it.
  ``request.user`` before that raises ``SynchronousOnlyOperation`` on the event loop (it would
  load the session and the user with blocking I/O) and works lazily in a worker thread
  (``sync_to_async``);
* only ``GET`` and ``HEAD`` reach the view (405 otherwise): the CSRF check is skipped, so an
  unsafe method carrying the session cookie must not run a view;
* ``login_required`` (Django's async-aware decorator) works and redirects to ``LOGIN_URL``
  (its sync test adds one thread hop); a stream API client is better served by a 401 as above.

``SESSION_ENGINE`` is read when the router is built; where each engine does its I/O is in
:mod:`django_arena_scale._streamauth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.utils.cache import patch_vary_headers
from django.utils.module_loading import import_string

from django_arena_scale._responses import close_without_signal
from django_arena_scale._streamauth import AuthStreamRequest, read_only_store
from django_arena_scale.metrics import method_label

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

logger = logging.getLogger("django_arena_scale.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# Loose on purpose: Django's ASGIHandler and channels type receive/send with Mapping messages.
ASGIApp = Callable[..., Awaitable[None]]
AsyncView = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

#: Middleware whose ``process_request``/``process_response`` are pure (headers, host checks,
#: redirects; no I/O), so running them inline on the event loop blocks nothing.
INLINE_SAFE_MIDDLEWARE = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django_arena_scale.requestid.RequestIDMiddleware",
    }
)
#: When this is in ``settings.MIDDLEWARE``, fast-path requests are counted like the others.
METRICS_MIDDLEWARE = "django_arena_scale.metrics.MetricsMiddleware"


def _default_middleware() -> list[str]:
    from django.conf import settings

    return [path for path in settings.MIDDLEWARE if path in INLINE_SAFE_MIDDLEWARE]


def _metrics_recorder() -> Callable[[str, str, int, float], None] | None:
    """``record_request`` when MetricsMiddleware is installed and metrics are on, else None."""
    from django.conf import settings

    from django_arena_scale.health import _fastconf as fastconf

    if METRICS_MIDDLEWARE not in settings.MIDDLEWARE or not fastconf.get("METRICS"):
        return None
    from django_arena_scale.metrics import _prom

    _prom.install()
    return _prom.record_request


def _no_response(request: HttpRequest) -> HttpResponseBase:
    msg = "StreamRouter calls middleware hooks directly; get_response is never used."
    raise RuntimeError(msg)


#: The methods an ``auth`` route serves: CSRF protection is skipped on the fast path.
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _auth_paths(auth: bool | Iterable[str], routes: Mapping[str, AsyncView]) -> frozenset[str]:
    if isinstance(auth, bool):
        return frozenset(routes) if auth else frozenset()
    if isinstance(auth, str):
        msg = f"StreamRouter auth should be a bool or a list of routed paths, got {auth!r}."
        raise ImproperlyConfigured(msg)
    paths = frozenset(auth)
    unknown = sorted(paths - set(routes))
    if unknown:
        msg = (
            f"StreamRouter auth names {unknown!r}, which are not routes; "
            f"expected some of {sorted(routes)!r}."
        )
        raise ImproperlyConfigured(msg)
    return paths


class StreamRouter:
    """Serve ``routes`` (exact path -> async view) natively; everything else goes to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, AsyncView],
        *,
        middleware: Iterable[str] | None = None,
        auth: bool | Iterable[str] = False,
    ) -> None:
        for path, view in routes.items():
            if not path.startswith("/"):
                msg = f"StreamRouter route {path!r} should be an absolute path starting with '/'."
                raise ImproperlyConfigured(msg)
            if not iscoroutinefunction(view):
                msg = (
                    f"StreamRouter route {path!r} maps to {view!r}, which is not an async view; "
                    "only async views can run on the event loop."
                )
                raise ImproperlyConfigured(msg)
        self.app = app
        self.routes = dict(routes)
        self.auth_paths = _auth_paths(auth, self.routes)
        self._session_store: type[SessionBase] | None = (
            read_only_store() if self.auth_paths else None
        )
        self.middleware_paths = list(_default_middleware() if middleware is None else middleware)
        self._request_hooks: list[Callable[[HttpRequest], HttpResponseBase | None]] = []
        self._response_hooks: list[Callable[[HttpRequest, HttpResponseBase], HttpResponseBase]]
        self._response_hooks = []
        for dotted in self.middleware_paths:
            instance = import_string(dotted)(_no_response)
            hook = getattr(instance, "process_request", None)
            if hook is not None:
                self._request_hooks.append(hook)
            hook = getattr(instance, "process_response", None)
            if hook is not None:
                self._response_hooks.append(hook)
        # Like Django's handler: the response phase runs in reverse order.
        self._response_hooks.reverse()
        self._record = _metrics_recorder()

    def __repr__(self) -> str:
        return (
            f"<StreamRouter routes={sorted(self.routes)!r} auth={sorted(self.auth_paths)!r} "
            f"middleware={self.middleware_paths!r} app={self.app!r}>"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        view = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if view is None:
            await self.app(scope, receive, send)
            return
        await self._serve(view, scope, receive, send)

    def _request_phase(self, request: HttpRequest) -> HttpResponseBase | None:
        try:
            # Host validation first, as CommonMiddleware would; a bad Host never reaches a view.
            request.get_host()
        except DisallowedHost:
            return HttpResponse("Bad Request (400)", status=400, content_type="text/plain")
        for hook in self._request_hooks:
            response = hook(request)
            if response is not None:
                return response
        return None

    def _response_phase(self, request: HttpRequest, response: HttpResponseBase) -> Any:
        for hook in self._response_hooks:
            response = hook(request, response)
        return response

    def _attach_session(self, request: AuthStreamRequest) -> HttpResponseBase | None:
        if request.method not in SAFE_METHODS:
            # No CSRF check runs here: an unsafe method carrying the session cookie stops now.
            return HttpResponseNotAllowed(sorted(SAFE_METHODS))
        from django.conf import settings

        assert self._session_store is not None
        request.session = self._session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
        return None

    async def _serve(self, view: AsyncView, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        auth = scope["path"] in self.auth_paths
        request = (
            AuthStreamRequest(scope, io.BytesIO()) if auth else ASGIRequest(scope, io.BytesIO())
        )
        response = self._request_phase(request)
        if response is None and isinstance(request, AuthStreamRequest):
            response = self._attach_session(request)
        if response is None:
            try:
                response = await view(request)
            except Exception:
                logger.exception("Stream view %r failed for %s.", view, scope["path"])
                response = HttpResponse("Server Error (500)", status=500, content_type="text/plain")
        session = getattr(request, "session", None) if auth else None
        if session is not None and session.accessed:
            # What SessionMiddleware does: a response that depends on the session varies on it.
            patch_vary_headers(response, ("Cookie",))
        response = self._response_phase(request, response)
        if self._record is not None:
            # The route label is the routed path itself: one of a few exact, configured paths.
            self._record(
                method_label(request.method),
                scope["path"].lstrip("/") or "/",
                response.status_code,
                time.perf_counter() - started,
            )
        # A held stream should not keep the request (META, headers, GET) alive for hours.
        del request
        task = asyncio.current_task()
        disconnected: list[bool] = []
        watcher = asyncio.ensure_future(_watch_disconnect(receive, task, disconnected))
        try:
            await _send_response(response, send)
        except asyncio.CancelledError:
            if not disconnected:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
        except OSError:
            # The client went away between two chunks; nothing left to tell it.
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            # Neither request signal is sent on the fast path: their usual receivers
            # (close_old_connections) are sync and concern the ORM, which an async view on the
            # event loop does not use.
            close_without_signal(response)


async def _watch_disconnect(
    receive: Receive, task: asyncio.Task[Any] | None, disconnected: list[bool]
) -> None:
    """Cancel the stream when the client disconnects (the request body, if any, is ignored)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.append(True)
    if task is not None:
        task.cancel()


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for name, value in response.items():
        headers.append((name.encode("ascii"), value.encode("latin1")))
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.OutputString().encode("ascii")))
    return headers


async def _send_response(response: Any, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _headers(response),
        }
    )
    if not response.streaming:
        await send({"type": "http.response.body", "body": response.content})
        return
    content = response.__aiter__()
    try:
        async for part in content:
            if part:
                await send({"type": "http.response.body", "body": bytes(part), "more_body": True})
    finally:
        aclose = getattr(content, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body"})
