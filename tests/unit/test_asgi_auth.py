"""StreamRouter auth routes: lazy read-only session, ``request.auser()``, no blocking I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client as DjangoClient

from django_arena_scale.asgi import StreamRouter
from tests.unit.test_asgi import Client, django_app, scope

pytestmark = pytest.mark.django_db(transaction=True)

LOCMEM_SESSIONS = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "sessions": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}


@pytest.fixture(autouse=True)
def cache_sessions(settings: Any) -> None:
    """Sessions in a cache whose async API is Django's sync_to_async wrapper (like Redis)."""
    settings.CACHES = LOCMEM_SESSIONS
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.SESSION_CACHE_ALIAS = "sessions"


@pytest.fixture
def user() -> User:
    created: User = User.objects.create_user("ada", password="pw-not-secret")
    return created


@pytest.fixture
def session_cookie(user: User) -> str:
    """A session cookie value for ``user``, created the way a login view creates it."""
    client = DjangoClient()
    client.force_login(user)
    return str(client.cookies["sessionid"].value)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every sync_to_async call (a hand-off to a thread)."""
    calls: list[object] = []
    original = SyncToAsync.__call__

    async def counting(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(self.func)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    return calls


def cookie_scope(value: str | None, **extra: Any) -> dict[str, Any]:
    headers = [(b"host", b"localhost")]
    if value is not None:
        headers.append((b"cookie", f"sessionid={value}".encode()))
    return scope(headers=headers, **extra)


async def whoami(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


async def quiet(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no user needed")


async def serve(router: StreamRouter, scope: dict[str, Any]) -> Client:
    client = Client()
    await router(scope, client.receive, client.send)
    return client


async def test_auth_route_sees_logged_in_user(session_cookie: str) -> None:
    """``await request.auser()`` returns the user whose session cookie came with the request."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    assert (client.status, client.body) == (200, b'{"user": "ada"}')


async def test_auth_route_anonymous_without_cookie_uses_no_thread(hops: list[object]) -> None:
    """No session cookie: ``auser()`` is AnonymousUser with no I/O and no thread hop."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(None))
    assert (client.body, hops) == (b'{"user": null}', [])


async def test_auth_route_unread_session_costs_nothing(
    session_cookie: str, hops: list[object]
) -> None:
    """A view that never asks for the user loads no session: no hop, no Vary, no cookie."""
    router = StreamRouter(django_app, {"/stream/": quiet}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    assert (client.status, hops) == (200, [])
    assert b"vary" not in client.headers
    assert b"set-cookie" not in client.headers


async def test_auth_route_read_session_varies_on_cookie(session_cookie: str) -> None:
    """Once the session was read the response carries ``Vary: Cookie`` (as SessionMiddleware)."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    assert client.headers[b"vary"] == b"Cookie"


async def test_auth_route_anonymous_read_varies_on_cookie() -> None:
    """Reading an absent session still varies on Cookie, as SessionMiddleware does."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(None))
    assert client.headers[b"vary"] == b"Cookie"


async def test_auth_route_never_sets_cookie_after_session_change(session_cookie: str) -> None:
    """A view that changes the session sends no Set-Cookie and the stored session is unchanged."""

    async def scribble(request: HttpRequest) -> HttpResponse:
        await request.session.aset("scribbled", True)
        await request.session.acycle_key()
        await request.session.asave()
        return HttpResponse("ok")

    router = StreamRouter(django_app, {"/stream/": scribble}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    stored = await sync_to_async(_stored_session)(session_cookie)
    assert b"set-cookie" not in client.headers
    assert "scribbled" not in stored
    assert "_auth_user_id" in stored


def _stored_session(key: str) -> dict[str, Any]:
    from django.contrib.sessions.backends.cache import SessionStore

    return dict(SessionStore(key).load())


async def test_auth_route_stale_hash_is_anonymous_and_not_deleted(
    session_cookie: str, user: User
) -> None:
    """A password change makes the session anonymous; the stream does not delete it."""
    user.set_password("changed-not-secret")
    await user.asave()
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    stored = await sync_to_async(_stored_session)(session_cookie)
    assert client.body == b'{"user": null}'
    assert "_auth_user_id" in stored


async def test_auth_route_user_on_event_loop_raises_before_auser(session_cookie: str) -> None:
    """``request.user`` before ``auser()`` raises a clear error instead of blocking the loop."""
    errors: list[str] = []

    async def view(request: HttpRequest) -> HttpResponse:
        try:
            request.user  # noqa: B018
        except SynchronousOnlyOperation as exc:
            errors.append(str(exc))
        return HttpResponse("ok")

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    await serve(router, cookie_scope(session_cookie))
    assert len(errors) == 1
    assert "await request.auser()" in errors[0]


async def test_auth_route_user_after_auser_is_cached_user(session_cookie: str) -> None:
    """After ``await request.auser()``, ``request.user`` returns the same user object."""

    async def view(request: HttpRequest) -> HttpResponse:
        user = await request.auser()
        return HttpResponse(str(request.user is user))

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    assert client.body == b"True"


async def test_auth_route_user_in_worker_thread_loads_lazily(session_cookie: str) -> None:
    """Sync code run through ``sync_to_async`` can read ``request.user`` directly."""

    async def view(request: HttpRequest) -> HttpResponse:
        name = await sync_to_async(lambda: request.user.get_username())()
        return HttpResponse(name)

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(session_cookie))
    assert client.body == b"ada"


async def test_auth_route_sync_session_access_on_loop_raises(session_cookie: str) -> None:
    """``request.session[key]`` before an async load raises instead of blocking the loop."""
    errors: list[Exception] = []

    async def view(request: HttpRequest) -> HttpResponse:
        try:
            request.session.get("x")
        except SynchronousOnlyOperation as exc:
            errors.append(exc)
        return HttpResponse("ok")

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    await serve(router, cookie_scope(session_cookie))
    assert len(errors) == 1


async def test_auth_route_unsafe_method_is_405() -> None:
    """A POST to an auth route never reaches the view (no CSRF check runs on the fast path)."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    client = await serve(router, cookie_scope(None, method="POST"))
    assert (client.status, client.headers[b"allow"]) == (405, b"GET, HEAD")


async def test_auth_route_login_required_redirects_anonymous(settings: Any) -> None:
    """Django's async-aware ``login_required`` works on an auth route and redirects."""
    settings.LOGIN_URL = "/login/"
    router = StreamRouter(
        django_app, {"/stream/": login_required(whoami)}, middleware=[], auth=True
    )
    client = await serve(router, cookie_scope(None))
    assert (client.status, client.headers[b"location"]) == (302, b"/login/?next=/stream/")


async def test_auth_route_login_required_lets_user_in(session_cookie: str) -> None:
    """``login_required`` lets a logged-in session through to the view."""
    router = StreamRouter(
        django_app, {"/stream/": login_required(whoami)}, middleware=[], auth=True
    )
    client = await serve(router, cookie_scope(session_cookie))
    assert (client.status, client.body) == (200, b'{"user": "ada"}')


async def test_auth_route_signed_cookie_sessions_load_without_thread(
    settings: Any, user: User, hops: list[object]
) -> None:
    """signed_cookies sessions are pure CPU: the session loads inline on the loop."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    client = DjangoClient()
    await sync_to_async(client.force_login)(user)
    cookie = str(client.cookies["sessionid"].value)
    hops.clear()

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(await request.session.aget("_auth_user_id")))

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    served = await serve(router, cookie_scope(cookie))
    assert (served.body, hops) == (str(user.pk).encode(), [])


def test_stream_router_auth_selects_listed_routes() -> None:
    """``auth=[paths]`` turns auth on for those routes only."""
    router = StreamRouter(django_app, {"/a/": whoami, "/b/": quiet}, middleware=[], auth=["/a/"])
    assert router.auth_paths == frozenset({"/a/"})


def test_stream_router_auth_refuses_unknown_path() -> None:
    """An auth path that is not a route is a configuration error naming it."""
    with pytest.raises(ImproperlyConfigured, match="'/nope/'"):
        StreamRouter(django_app, {"/a/": whoami}, middleware=[], auth=["/nope/"])


def test_stream_router_auth_refuses_bare_string() -> None:
    """``auth='/a/'`` (a string, not a list) is refused rather than read letter by letter."""
    with pytest.raises(ImproperlyConfigured, match="'/a/'"):
        StreamRouter(django_app, {"/a/": whoami}, middleware=[], auth="/a/")


async def test_stream_router_without_auth_request_has_no_session(session_cookie: str) -> None:
    """With auth off (the default) the request is a plain ASGIRequest without session or user."""
    seen_requests: list[HttpRequest] = []

    async def view(request: HttpRequest) -> HttpResponse:
        seen_requests.append(request)
        return HttpResponse("ok")

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[])
    client = await serve(router, cookie_scope(session_cookie))
    request = seen_requests[0]
    assert type(request) is ASGIRequest
    assert not hasattr(request, "session")
    assert not hasattr(request, "user")
    assert b"vary" not in client.headers


async def test_auth_route_concurrent_users_are_isolated(user: User, session_cookie: str) -> None:
    """Concurrent requests each see their own user (nothing shared across requests)."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    clients = await asyncio.gather(
        serve(router, cookie_scope(session_cookie)), serve(router, cookie_scope(None))
    )
    assert [c.body for c in clients] == [b'{"user": "ada"}', b'{"user": null}']


async def test_auth_route_file_sessions_load_off_the_loop(
    settings: Any, tmp_path: Any, user: User, hops: list[object]
) -> None:
    """The file engine's aload reads on the calling thread; the router moves it to a thread."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.file"
    settings.SESSION_FILE_PATH = str(tmp_path)
    client = DjangoClient()
    await sync_to_async(client.force_login)(user)
    cookie = str(client.cookies["sessionid"].value)
    hops.clear()

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(await request.session.aget("_auth_user_id")))

    router = StreamRouter(django_app, {"/stream/": view}, middleware=[], auth=True)
    served = await serve(router, cookie_scope(cookie))
    assert served.body == str(user.pk).encode()
    assert [getattr(f, "__name__", "") for f in hops] == ["load"]


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records calls of django.db.close_old_connections (request_finished's DB cleanup)."""
    import django.db

    calls: list[bool] = []
    monkeypatch.setattr(django.db, "close_old_connections", lambda **kw: calls.append(True))
    return calls


async def test_auth_route_user_lookup_closes_old_connections(
    session_cookie: str, closes: list[bool]
) -> None:
    """After a user lookup the shared thread's obsolete DB connections are closed once."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    await serve(router, cookie_scope(session_cookie))
    assert closes == [True]


async def test_auth_route_anonymous_skips_connection_cleanup(closes: list[bool]) -> None:
    """An anonymous request touches no database, so nothing is cleaned up."""
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    await serve(router, cookie_scope(None))
    assert closes == []


async def test_auth_route_in_front_of_django_asgi_app(session_cookie: str) -> None:
    """With Django's real ASGI application behind it, routed and other paths both answer."""
    from django.core.asgi import get_asgi_application

    router = StreamRouter(get_asgi_application(), {"/stream/": whoami}, auth=True)
    stream, index = await asyncio.gather(
        serve(router, cookie_scope(session_cookie)), serve(router, scope("/"))
    )
    assert (stream.body, index.body) == (b'{"user": "ada"}', b'{"ok": true}')


async def test_auth_route_db_sessions_decode(settings: Any, user: User) -> None:
    """Database sessions (encoded with the engine's salt) decode through the read-only store."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.db"
    client = DjangoClient()
    await sync_to_async(client.force_login)(user)
    cookie = str(client.cookies["sessionid"].value)
    router = StreamRouter(django_app, {"/stream/": whoami}, middleware=[], auth=True)
    served = await serve(router, cookie_scope(cookie))
    assert served.body == b'{"user": "ada"}'
