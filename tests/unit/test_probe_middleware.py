"""ProbeMiddleware: each probe behaviour of the README's Probes section (sync, test client)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf.urls.i18n import i18n_patterns
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, RequestFactory
from django.urls import include, path

from django_arena_scale.health._model import Check, Unavailable
from django_arena_scale.health._service import get_runner
from django_arena_scale.lifecycle._state import Lifecycle, get_lifecycle, reset_lifecycle
from django_arena_scale.middleware import ProbeMiddleware

SECRET = "password=hunter2 redis://:s3cr3t-token@10.0.0.5:6379/0"
PROBE = "django_arena_scale.middleware.ProbeMiddleware"


# --- a tiny URLconf and a throttling middleware for the stack tests ---------------------------
def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("", index),
    *i18n_patterns(path("page/", index)),
    path("probes/", include("django_arena_scale.urls")),
]


class ThrottleMiddleware:
    """Rejects every request with 429, like a rate limiter that ran out of tokens."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("slow down", status=429)


THROTTLE = f"{__name__}.ThrottleMiddleware"


@pytest.fixture(autouse=True)
def _probe_settings(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_CHECKS = []


def _raise(exc: BaseException) -> Callable[[], None]:
    def check() -> None:
        raise exc

    return check


def _body(response: HttpResponse) -> dict[str, Any]:
    return json.loads(response.content)


# --- stack: every other middleware is bypassed -------------------------------------------------
@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/", "/status/"])
def test_probe_bare_ip_host_not_in_allowed_hosts(client: Client, settings: Any, url: str) -> None:
    """A bare-IP Host header that ALLOWED_HOSTS rejects still gets a probe answer."""
    settings.MIDDLEWARE = [PROBE, "django.middleware.common.CommonMiddleware"]
    assert client.get(url, HTTP_HOST="10.1.2.3").status_code == 200


def test_probe_bare_ip_host_is_rejected_for_normal_pages(client: Client, settings: Any) -> None:
    """Control: the same Host header is rejected (400) outside the probes."""
    settings.MIDDLEWARE = [PROBE, "django.middleware.common.CommonMiddleware"]
    assert client.get("/", HTTP_HOST="10.1.2.3").status_code == 400


def test_probe_never_calls_get_host(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """request.get_host() is never called for a probe."""

    def boom(self: HttpRequest) -> str:
        raise AssertionError("get_host called")

    monkeypatch.setattr(HttpRequest, "get_host", boom)
    statuses = [client.get(f"/{p}/").status_code for p in ("live", "health", "ready", "status")]
    assert statuses == [200, 200, 200, 200]


def test_probe_secure_ssl_redirect_not_applied(client: Client, settings: Any) -> None:
    """SECURE_SSL_REDIRECT=True does not redirect a plain-HTTP probe."""
    settings.SECURE_SSL_REDIRECT = True
    settings.MIDDLEWARE = [PROBE, "django.middleware.security.SecurityMiddleware"]
    assert client.get("/ready/").status_code == 200


def test_probe_login_required_middleware_not_applied(client: Client, settings: Any) -> None:
    """LoginRequiredMiddleware does not send an anonymous probe to the login page."""
    settings.MIDDLEWARE = [
        PROBE,
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    assert client.get("/health/").status_code == 200


def test_probe_without_trailing_slash_with_append_slash(client: Client, settings: Any) -> None:
    """With APPEND_SLASH and CommonMiddleware, '/live' is answered, not redirected."""
    settings.APPEND_SLASH = True
    settings.MIDDLEWARE = [PROBE, "django.middleware.common.CommonMiddleware"]
    assert client.get("/live").status_code == 200


def test_probe_locale_middleware_not_applied(client: Client, settings: Any) -> None:
    """LocaleMiddleware with i18n_patterns neither redirects nor varies a probe."""
    settings.USE_I18N = True
    settings.MIDDLEWARE = [
        PROBE,
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        "django.middleware.common.CommonMiddleware",
    ]
    response = client.get("/health/", HTTP_ACCEPT_LANGUAGE="fr")
    assert (response.status_code, response.has_header("Content-Language")) == (200, False)


def test_probe_throttling_middleware_not_applied(client: Client, settings: Any) -> None:
    """A throttling middleware later in the stack never sees a probe."""
    settings.MIDDLEWARE = [PROBE, THROTTLE]
    assert client.get("/live/").status_code == 200


def test_probe_throttling_middleware_applies_to_other_paths(client: Client, settings: Any) -> None:
    """Control: the throttle does answer 429 for a normal page."""
    settings.MIDDLEWARE = [PROBE, THROTTLE]
    assert client.get("/").status_code == 429


FULL_STACK = [
    PROBE,
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]


@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/", "/status/"])
def test_probe_sets_no_cookie(client: Client, settings: Any, url: str) -> None:
    """No Set-Cookie, even with a session and CSRF cookie sent by the client."""
    settings.MIDDLEWARE = FULL_STACK
    client.cookies["sessionid"] = "abc"
    client.cookies["csrftoken"] = "x" * 32
    assert client.get(url).cookies == {}


@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/", "/status/"])
def test_probe_has_no_vary_cookie(client: Client, settings: Any, url: str) -> None:
    """No Vary header at all (so no Vary: Cookie)."""
    settings.MIDDLEWARE = FULL_STACK
    client.cookies["sessionid"] = "abc"
    assert not client.get(url).has_header("Vary")


@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/", "/status/"])
def test_probe_cache_control_no_store(client: Client, url: str) -> None:
    """Every probe answer says Cache-Control: no-store."""
    assert client.get(url)["Cache-Control"] == "no-store"


def test_probe_failure_cache_control_no_store(client: Client) -> None:
    """A 503 answer is not cacheable either."""
    get_lifecycle().begin_drain()
    assert client.get("/ready/")["Cache-Control"] == "no-store"


@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/", "/status/"])
def test_probe_head_has_no_body(url: str) -> None:
    """HEAD answers carry no body (checked on the raw middleware, not the test client)."""
    middleware = ProbeMiddleware(lambda request: HttpResponse("app"))
    response = middleware(RequestFactory().head(url))
    assert (response.status_code, response.content) == (200, b"")


def test_probe_head_failure_has_no_body() -> None:
    """A 503 HEAD answer has no body either."""
    middleware = ProbeMiddleware(lambda request: HttpResponse("app"))
    get_lifecycle().begin_drain()
    response = middleware(RequestFactory().head("/ready/"))
    assert (response.status_code, response.content) == (503, b"")


@pytest.mark.parametrize("accept", ["*/*", "text/html", "text/html,application/xhtml+xml"])
@pytest.mark.parametrize("url", ["/live/", "/health/", "/ready/"])
def test_probe_always_json(client: Client, accept: str, url: str) -> None:
    """JSON whatever the Accept header says."""
    response = client.get(url, HTTP_ACCEPT=accept)
    assert response["Content-Type"] == "application/json"


def test_probe_status_is_health_json(client: Client) -> None:
    """/status/ uses the IETF media type even for Accept: text/html."""
    response = client.get("/status/", HTTP_ACCEPT="text/html")
    assert response["Content-Type"] == "application/health+json"


def test_probe_failure_is_json_not_html(client: Client) -> None:
    """A failing probe still answers JSON, never an HTML error page."""
    get_lifecycle().begin_drain()
    response = client.get("/ready/", HTTP_ACCEPT="text/html")
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_probe_other_methods_get_405(client: Client, method: str) -> None:
    """Only GET and HEAD are answered; other methods get 405 with Allow."""
    response = getattr(client, method)("/ready/")
    assert (response.status_code, response["Allow"]) == (405, "GET, HEAD")


def test_probe_other_paths_pass_through(client: Client) -> None:
    """A non-probe path reaches the application."""
    assert _body(client.get("/")) == {"ok": True}


def test_probe_longer_path_passes_through(client: Client) -> None:
    """Only exact probe paths are answered: '/live/x' goes to the app (404 here)."""
    assert client.get("/live/x").status_code == 404


def test_probe_prefix_configurable(client: Client, settings: Any) -> None:
    """ARENA_SCALE_PROBE_PREFIX moves the probes."""
    settings.ARENA_SCALE_PROBE_PREFIX = "/-/"
    assert client.get("/-/live").status_code == 200


def test_probe_prefix_moves_probes_away_from_root(client: Client, settings: Any) -> None:
    """With a prefix, '/live/' is an ordinary (here unknown) path."""
    settings.ARENA_SCALE_PROBE_PREFIX = "/-/"
    assert client.get("/live/").status_code == 404


# --- /live/ ------------------------------------------------------------------------------------
def test_live_pass_body(client: Client) -> None:
    """/live/ answers 200 {"status": "pass"}."""
    response = client.get("/live/")
    assert (response.status_code, _body(response)) == (200, {"status": "pass"})


def test_live_fails_when_marked_broken(client: Client) -> None:
    """mark_broken() makes /live/ answer 503."""
    get_lifecycle().mark_broken("deadlock")
    response = client.get("/live/")
    assert (response.status_code, _body(response)) == (503, {"status": "fail"})


def test_live_fails_when_heartbeat_stale(client: Client, settings: Any) -> None:
    """A heartbeat older than ARENA_SCALE_HEARTBEAT_TIMEOUT makes /live/ answer 503."""
    now = [1000.0]
    lifecycle = reset_lifecycle(Lifecycle(clock=lambda: now[0]))
    settings.ARENA_SCALE_HEARTBEAT_TIMEOUT = 30
    lifecycle.heartbeat()
    now[0] += 31
    assert client.get("/live/").status_code == 503


def test_live_passes_with_fresh_heartbeat(client: Client, settings: Any) -> None:
    """A heartbeat within the timeout keeps /live/ at 200."""
    now = [1000.0]
    lifecycle = reset_lifecycle(Lifecycle(clock=lambda: now[0]))
    settings.ARENA_SCALE_HEARTBEAT_TIMEOUT = 30
    lifecycle.heartbeat()
    now[0] += 29
    assert client.get("/live/").status_code == 200


def test_live_ignores_draining(client: Client) -> None:
    """Draining is a readiness matter: /live/ stays 200."""
    get_lifecycle().begin_drain()
    assert client.get("/live/").status_code == 200


def test_live_ignores_failing_dependencies(client: Client, settings: Any) -> None:
    """/live/ runs no check, so a failing dependency cannot restart the process."""
    settings.ARENA_SCALE_CHECKS = [Check("db", _raise(Unavailable()))]
    client.get("/live/")
    assert get_runner().evaluations == 0


def test_live_does_no_file_io(
    client: Client, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/live/ does not even stat the drain file."""
    settings.ARENA_SCALE_DRAIN_FILE = str(tmp_path / "drain")
    client.get("/live/")  # build the middleware chain first

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("file system touched")

    monkeypatch.setattr(os, "stat", no_io)
    monkeypatch.setattr(os.path, "exists", no_io)
    assert client.get("/live/").status_code == 200


# --- /health/ ----------------------------------------------------------------------------------
def test_health_ready_is_200(client: Client) -> None:
    """READY -> 200 {"status": "pass"}."""
    response = client.get("/health/")
    assert (response.status_code, _body(response)) == (200, {"status": "pass"})


def test_health_starting_is_503(client: Client) -> None:
    """STARTING (warm-ups not finished) -> 503 with reason starting."""
    get_lifecycle().claim_warmups()  # warm-ups "running" elsewhere
    response = client.get("/health/")
    body = _body(response)
    assert (response.status_code, body) == (
        503,
        {"status": "fail", "checks": {"lifecycle": "starting"}},
    )


def test_health_draining_is_503(client: Client) -> None:
    """begin_drain() -> 503 with reason draining."""
    get_lifecycle().begin_drain()
    response = client.get("/health/")
    assert (response.status_code, _body(response)["checks"]) == (503, {"lifecycle": "draining"})


def test_health_drain_file_is_503(client: Client, settings: Any, tmp_path: Path) -> None:
    """The drain file's presence -> DRAINING -> 503."""
    drain = tmp_path / "drain"
    drain.write_text("")
    settings.ARENA_SCALE_DRAIN_FILE = str(drain)
    assert _body(client.get("/health/"))["checks"] == {"lifecycle": "draining"}


def test_health_drain_file_removed_is_200_again(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    """Removing the drain file ends DRAINING at once."""
    drain = tmp_path / "drain"
    drain.write_text("")
    settings.ARENA_SCALE_DRAIN_FILE = str(drain)
    client.get("/health/")
    drain.unlink()
    assert client.get("/health/").status_code == 200


def test_health_ignores_failing_checks(client: Client, settings: Any) -> None:
    """/health/ is lifecycle only: a failing critical check does not fail it."""
    settings.ARENA_SCALE_CHECKS = [Check("db", _raise(Unavailable()))]
    assert client.get("/health/").status_code == 200


# --- /ready/ -----------------------------------------------------------------------------------
def test_ready_pass(client: Client, settings: Any) -> None:
    """READY and all critical checks pass -> 200 {"status": "pass"}."""
    settings.ARENA_SCALE_CHECKS = [Check("ok", lambda: None)]
    response = client.get("/ready/")
    assert (response.status_code, _body(response)) == (200, {"status": "pass"})


def test_ready_failure_body_names_check_and_reason(client: Client, settings: Any) -> None:
    """A failed critical check -> 503 {"status": "fail", "checks": {name: reason}}."""
    settings.ARENA_SCALE_CHECKS = [Check("ok", lambda: None), Check("redis", _raise(Unavailable()))]
    response = client.get("/ready/")
    assert (response.status_code, _body(response)) == (
        503,
        {"status": "fail", "checks": {"redis": "unavailable"}},
    )


def test_ready_error_reason_for_exception(client: Client, settings: Any) -> None:
    """A check raising an arbitrary exception -> reason error."""
    settings.ARENA_SCALE_CHECKS = [Check("boom", _raise(RuntimeError(SECRET)))]
    assert _body(client.get("/ready/"))["checks"] == {"boom": "error"}


@pytest.mark.parametrize("url", ["/ready/", "/status/"])
def test_ready_exception_text_never_leaks(client: Client, settings: Any, url: str) -> None:
    """The exception's (secret-looking) message never appears in the response."""
    settings.ARENA_SCALE_CHECKS = [Check("boom", _raise(RuntimeError(SECRET)))]
    settings.ARENA_SCALE_STATUS_TOKEN = "t0k"
    content = client.get(url, HTTP_AUTHORIZATION="Bearer t0k").content
    assert [w for w in (b"hunter2", b"s3cr3t", b"RuntimeError") if w in content] == []


def test_ready_timeout_reason(client: Client, settings: Any) -> None:
    """A check slower than its timeout -> reason timeout (distinct from error)."""
    import threading

    release = threading.Event()
    settings.ARENA_SCALE_CHECKS = [Check("slow", lambda: release.wait(5), timeout=0.05)]
    try:
        body = _body(client.get("/ready/"))
    finally:
        release.set()
    assert body["checks"] == {"slow": "timeout"}


def test_ready_starting_reason(client: Client) -> None:
    """STARTING -> 503 with reason starting."""
    get_lifecycle().claim_warmups()
    assert _body(client.get("/ready/"))["checks"] == {"lifecycle": "starting"}


def test_ready_draining_reason(client: Client) -> None:
    """DRAINING -> 503 with reason draining, even when every check passes."""
    get_lifecycle().begin_drain()
    response = client.get("/ready/")
    assert (response.status_code, _body(response)["checks"]) == (503, {"lifecycle": "draining"})


def test_ready_non_critical_failure_still_200(client: Client, settings: Any) -> None:
    """Only critical checks decide readiness."""
    settings.ARENA_SCALE_CHECKS = [Check("optional", _raise(Unavailable()), critical=False)]
    assert client.get("/ready/").status_code == 200


def test_ready_results_are_cached(client: Client, settings: Any) -> None:
    """Two /ready/ calls within ARENA_SCALE_CHECK_CACHE_TTL evaluate the checks once."""
    settings.ARENA_SCALE_CHECK_CACHE_TTL = 60
    calls = []
    settings.ARENA_SCALE_CHECKS = [Check("count", lambda: calls.append(1))]
    client.get("/ready/")
    client.get("/ready/")
    assert len(calls) == 1


def test_ready_unloadable_check_path_is_error(client: Client, settings: Any) -> None:
    """A dotted path that does not import fails readiness with error, not a 500."""
    settings.ARENA_SCALE_CHECKS = ["no.such.module.check"]
    response = client.get("/ready/")
    assert (response.status_code, _body(response)["checks"]) == (
        503,
        {"no.such.module.check": "error"},
    )


def test_ready_internal_failure_is_bare_503(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks inside the probe, the answer is a bare JSON 503, never a traceback."""
    from django_arena_scale.health import _service as service

    monkeypatch.setattr(service, "_ready_precheck", _raise(RuntimeError(SECRET)))
    response = client.get("/ready/")
    assert (response.status_code, _body(response)) == (503, {"status": "fail"})


def test_ready_single_flight_100_concurrent_requests(settings: Any) -> None:
    """100 concurrent /ready/ requests while the checks run cause one evaluation."""
    import threading

    release = threading.Event()
    calls = []

    def slow() -> None:
        calls.append(1)
        release.wait(10)

    settings.ARENA_SCALE_READY_DEADLINE = 10
    settings.ARENA_SCALE_CHECKS = [Check("slow", slow, timeout=10)]
    middleware = ProbeMiddleware(lambda request: HttpResponse("app"))
    statuses: list[int] = []

    def call() -> None:
        statuses.append(middleware(RequestFactory().get("/ready/")).status_code)

    threads = [threading.Thread(target=call) for _ in range(100)]
    for thread in threads:
        thread.start()
    import time

    deadline = time.monotonic() + 10
    while get_runner().joined < 99 and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for thread in threads:
        thread.join(10)
    assert (get_runner().evaluations, len(calls), statuses.count(200)) == (1, 1, 100)


# --- URLconf views -------------------------------------------------------------------------------
def test_probe_urlconf_views_answer(client: Client, settings: Any) -> None:
    """include('django_arena_scale.urls') serves the same probes as views."""
    settings.MIDDLEWARE = []
    response = client.get("/probes/ready")
    assert (response.status_code, _body(response)) == (200, {"status": "pass"})


def test_probe_urlconf_views_bypass_login_required(client: Client, settings: Any) -> None:
    """The views are marked login_not_required."""
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    assert client.get("/probes/live/").status_code == 200


def test_probe_middleware_repr() -> None:
    """repr names the prefix and the mode."""
    assert repr(ProbeMiddleware(lambda r: HttpResponse())) == "<ProbeMiddleware prefix='/' sync>"


def test_probe_responses_do_not_share_state(client: Client) -> None:
    """Responses cloned from the cached template share no headers, closers or cookies."""
    first = client.get("/live/")
    first["X-Mutated"] = "1"
    first.set_cookie("c", "v")
    second = client.get("/live/")
    assert (second.has_header("X-Mutated"), second.cookies, second.content) == (
        False,
        {},
        b'{"status":"pass"}',
    )


def test_probe_invalid_prefix_setting_falls_back(client: Client, settings: Any) -> None:
    """A wrongly typed ARENA_SCALE_PROBE_PREFIX does not break the app (system checks report it)."""
    settings.ARENA_SCALE_PROBE_PREFIX = 42
    assert client.get("/live/").status_code == 200


def test_live_invalid_heartbeat_setting_stays_live(client: Client, settings: Any) -> None:
    """A wrongly typed ARENA_SCALE_HEARTBEAT_TIMEOUT never turns /live/ into 503."""
    settings.ARENA_SCALE_HEARTBEAT_TIMEOUT = "soon"
    get_lifecycle().heartbeat()
    assert client.get("/live/").status_code == 200


def test_ready_invalid_deadline_setting_uses_default(client: Client, settings: Any) -> None:
    """A wrongly typed readiness setting falls back to its default instead of failing."""
    settings.ARENA_SCALE_READY_DEADLINE = "fast"
    response = client.get("/ready/")
    assert (response.status_code, response.content) == (200, b'{"status":"pass"}')
