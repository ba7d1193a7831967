"""Django adapter: answers the four probes from the lifecycle and the check runner.

Used by ``ProbeMiddleware`` and by the views in ``django_arena_scale.urls``.  Never calls
``request.get_host()``, never touches ``request.session`` or ``request.user`` (so no cookie
and no ``Vary: Cookie``), never renders HTML, never returns exception text.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import weakref
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse
from django.utils.datastructures import CaseInsensitiveMapping

from django_arena_scale._redact import redact, redact_all
from django_arena_scale._responses import close_without_signal
from django_arena_scale.health import _fastconf as fastconf
from django_arena_scale.health._access import address_allowed, bearer_token_matches
from django_arena_scale.health._model import IncludeShared, Reason, Report, Status
from django_arena_scale.health._registry import get_checks
from django_arena_scale.health._runner import Runner
from django_arena_scale.lifecycle._state import Lifecycle, State, get_lifecycle

logger = logging.getLogger("django_arena_scale.health")

PROBES = ("live", "health", "ready", "status")
JSON = "application/json"
HEALTH_JSON = "application/health+json"
_PASS = b'{"status":"pass"}'
_FAIL = b'{"status":"fail"}'

_runner = Runner()


def get_runner() -> Runner:
    """The process-wide check runner."""
    return _runner


def reset_runner(runner: Runner | None = None) -> Runner:
    """Replace (or clear) the process-wide runner: tests, and forked children."""
    global _runner
    if runner is None:
        _runner.clear()
    else:
        _runner = runner
    return _runner


if hasattr(os, "register_at_fork"):  # a child must not inherit a half-finished evaluation
    os.register_at_fork(after_in_child=lambda: _runner.clear())


#: ``request_finished``'s receivers in a plain Django project: end-of-request cleanup of the
#: database connections, the caches and the thread's URLconf.
DJANGO_CLEANUP = frozenset(
    {
        ("django.db", "close_old_connections"),
        ("django.core.cache", "close_caches"),
        ("django.core.handlers.base", "reset_urlconf"),
    }
)


def only_django_cleanup() -> bool:
    """Whether ``request_finished``'s live receivers are all in :data:`DJANGO_CLEANUP`."""
    for entry in request_finished.receivers:
        receiver = entry[1]
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
            if receiver is None:
                continue
        key = (getattr(receiver, "__module__", None), getattr(receiver, "__qualname__", None))
        if key not in DJANGO_CLEANUP:
            return False
    return True


class IdleProbeResponse(HttpResponse):
    """The response of a probe that used no database connection and no cache (``live``/``health``).

    ``close()`` sends ``request_finished`` (Django's WSGI and ASGI handlers both call it), whose
    receivers in a plain Django project only clean up after the request: close obsolete
    database connections (``request_started`` already did that before the probe ran, and the
    probe opened none), close the caches (the probe used none) and reset the thread's URLconf
    (the next request sets it again).  For such a probe the signal is pure cost: about 40% of
    its time in Django's WSGI handler.  So when those are its only receivers, ``close()`` runs
    the response's own closers and skips the signal; any other receiver (an APM agent, Sentry,
    the project's own) gets it as usual.
    """

    def close(self) -> None:
        if only_django_cleanup():
            close_without_signal(self)
        else:
            super().close()


def _build(
    status: int, body: bytes, head: bool, content_type: str, cls: type[HttpResponse] = HttpResponse
) -> HttpResponse:
    response = cls(b"" if head else body, content_type=content_type, status=status)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    if not head:
        response["Content-Length"] = str(len(body))
    return response


class _Template:
    """A response built once by the real constructor, cloned per request.

    Cloning is several times cheaper than ``HttpResponse(...)`` plus headers.  Every attribute
    comes from the constructor call; only the mutable containers (header store, resource
    closers, body container, cookies) are copied, so responses share nothing.
    """

    def __init__(self, proto: HttpResponse) -> None:
        self.cls = type(proto)
        self.attrs = dict(proto.__dict__)
        self.lists: list[str] = []
        self.cookies: list[str] = []
        self.headers: list[tuple[str, type[Any], dict[str, Any], list[str]]] = []
        for key, value in proto.__dict__.items():
            if isinstance(value, list):
                self.lists.append(key)
            elif isinstance(value, SimpleCookie):
                self.cookies.append(key)
            elif isinstance(value, CaseInsensitiveMapping):
                inner = dict(value.__dict__)
                dicts = [k for k, v in inner.items() if isinstance(v, dict)]
                self.headers.append((key, type(value), inner, dicts))

    def clone(self) -> HttpResponse:
        attrs = self.attrs.copy()
        for key in self.lists:
            attrs[key] = list(attrs[key])
        for key in self.cookies:
            attrs[key] = SimpleCookie()
        for key, cls, inner, dicts in self.headers:
            headers = object.__new__(cls)
            state = inner.copy()
            for name in dicts:
                state[name] = state[name].copy()
            headers.__dict__.update(state)
            attrs[key] = headers
        response: HttpResponse = object.__new__(self.cls)
        response.__dict__.update(attrs)
        return response


_TEMPLATES: dict[tuple[int, bytes, bool, str, type[HttpResponse]], _Template] = {}
_MAX_TEMPLATES = 64


def _response(
    status: int,
    body: bytes,
    request: HttpRequest,
    content_type: str = JSON,
    cls: type[HttpResponse] = HttpResponse,
) -> HttpResponse:
    head = request.method == "HEAD"
    key = (status, body, head, content_type, cls)
    template = _TEMPLATES.get(key)
    if template is not None:
        return template.clone()
    response = _build(status, body, head, content_type, cls)
    if len(_TEMPLATES) < _MAX_TEMPLATES and len(body) <= 512:
        _TEMPLATES[key] = _Template(_build(status, body, head, content_type, cls))
    return response


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def method_not_allowed(request: HttpRequest) -> HttpResponse:
    response = _response(405, _FAIL, request)
    response["Allow"] = "GET, HEAD"
    return response


def _lifecycle_reason(state: State) -> Reason:
    return Reason.DRAINING if state is State.DRAINING else Reason.STARTING


def _current_state() -> State:
    """The lifecycle state, first starting the warm-ups if nobody did in this process."""
    lifecycle = get_lifecycle()
    state = lifecycle.state
    if state is State.STARTING and not lifecycle.warmups_claimed:
        from django_arena_scale.lifecycle._warmup import start_warmups_or_log

        start_warmups_or_log()
        state = lifecycle.state
    return state


# --- /live/ and /health/ --------------------------------------------------------------------
def setting_or_default(name: str) -> Any:
    """``conf.<name>``, memoised; the registry default when the value has a wrong type."""
    return fastconf.get(name)


def live(request: HttpRequest) -> HttpResponse:
    """No I/O: fails only when the process marked itself broken or its heartbeat is stale."""
    if get_lifecycle().is_live(setting_or_default("HEARTBEAT_TIMEOUT")):
        return _response(200, _PASS, request, cls=IdleProbeResponse)
    return _response(503, _FAIL, request, cls=IdleProbeResponse)


def _not_ready_body(state: State) -> bytes:
    return _dumps({"status": "fail", "checks": {"lifecycle": _lifecycle_reason(state).value}})


def health(request: HttpRequest) -> HttpResponse:
    """Lifecycle only: 200 when READY, 503 when STARTING or DRAINING."""
    state = _current_state()
    if state is State.READY:
        return _response(200, _PASS, request, cls=IdleProbeResponse)
    return _response(503, _not_ready_body(state), request, cls=IdleProbeResponse)


# --- /ready/ -----------------------------------------------------------------------------------
def _runner_kwargs() -> dict[str, float]:
    return {
        "deadline": fastconf.get("READY_DEADLINE"),
        "default_timeout": fastconf.get("CHECK_TIMEOUT"),
        "ttl": fastconf.get("CHECK_CACHE_TTL"),
    }


def include_shared() -> IncludeShared:
    """``ARENA_SCALE_READY_INCLUDE_SHARED``: which shared-scope checks also decide ``/ready/``."""
    value: IncludeShared = fastconf.get("READY_INCLUDE_SHARED")
    return value


def _ready_from(report: Report, request: HttpRequest) -> HttpResponse:
    failures = report.ready_failures(include_shared())
    if not failures:
        return _response(200, _PASS, request)
    return _response(503, _dumps({"status": "fail", "checks": failures}), request)


def _ready_precheck(request: HttpRequest) -> HttpResponse | None:
    state = _current_state()
    if state is State.READY:
        return None
    return _response(503, _not_ready_body(state), request)


def ready(request: HttpRequest) -> HttpResponse:
    """Lifecycle plus the critical checks that decide readiness (replica scope by default).

    Checks run cached per process, single flight, under a deadline.  Failing shared-scope
    checks (database, Redis, channel layer) show in ``/status/`` and the log, not here, unless
    ``ARENA_SCALE_READY_INCLUDE_SHARED`` opts them in.
    """
    early = _ready_precheck(request)
    if early is not None:
        return early
    return _ready_from(get_runner().get(get_checks, **_runner_kwargs()), request)


async def aready(request: HttpRequest) -> HttpResponse:
    early = _ready_precheck(request)
    if early is not None:
        return early
    return _ready_from(await get_runner().aget(get_checks, **_runner_kwargs()), request)


# --- /status/ ----------------------------------------------------------------------------------
_HOSTNAME = socket.gethostname()


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def breaker_section() -> dict[str, dict[str, Any]] | None:
    """Circuit breaker states from ``resilience._status``; None if unavailable (logged)."""
    try:
        from django_arena_scale.resilience._status import breaker_status
    except ImportError:
        logger.debug("No breaker status available.", exc_info=True)
        return None
    try:
        raw = breaker_status()
        section: dict[str, dict[str, Any]] = {}
        for name, info in dict(raw).items():
            entry = dict(info)
            # Breakers describe LLM providers: they may warn, they never fail a replica.
            entry["status"] = Status.PASS.value if entry.get("status") == "pass" else "warn"
            section[str(name)] = entry
        return section
    except Exception:
        logger.warning("breaker_status() failed; omitting the breakers section.", exc_info=True)
        return None


def status_payload(
    report: Report, lifecycle: Lifecycle, *, detailed: bool
) -> tuple[int, dict[str, Any]]:
    from django_arena_scale import __version__

    state = lifecycle.state
    included = include_shared()
    overall = report.overall(included) if state is State.READY else Status.FAIL
    breakers = breaker_section() if detailed else None
    if (
        overall is Status.PASS
        and breakers
        and any(b["status"] != "pass" for b in breakers.values())
    ):
        overall = Status.WARN
    code = 503 if overall is Status.FAIL else 200
    if not detailed:
        return code, {"status": overall.value}
    checks: dict[str, list[dict[str, Any]]] = {}
    for result in report.results:
        entry: dict[str, Any] = {
            "componentId": result.name,
            "componentType": result.component_type,
            "status": result.status.value,
            "observedValue": round(result.duration * 1000, 3),
            "observedUnit": "ms",
            "time": _iso(report.observed_at),
            "affectsReadiness": result.affects_readiness(included),
            "scope": result.scope.value,
            "tags": sorted(result.tags),
        }
        if result.reason is not None:
            entry["output"] = result.reason.value
        if result.target:
            entry["target"] = redact(result.target)
        checks[result.name] = [entry]
    payload: dict[str, Any] = {
        "status": overall.value,
        "version": __version__.split(".", 1)[0],
        "releaseId": __version__,
        "serviceId": f"{_HOSTNAME}:{os.getpid()}",
        "description": "django-arena-scale replica",
        "replica": {
            "hostname": _HOSTNAME,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": _iso(lifecycle.started_at),
            "uptime_s": round(lifecycle.uptime(), 3),
        },
        "lifecycle": {
            "state": state.value,
            "live": lifecycle.is_live(fastconf.get("HEARTBEAT_TIMEOUT")),
            "draining_requested": lifecycle.draining_requested,
            "drain_file_present": lifecycle.drain_file_present(),
            "warmups_done": lifecycle.warmups_done,
            "warmup_failures": list(lifecycle.warmup_failures),
            "heartbeat_age_s": lifecycle.heartbeat_age(),
        },
        "checks": checks,
    }
    if breakers is not None:
        payload["breakers"] = breakers
    if state is not State.READY:
        payload["output"] = _lifecycle_reason(state).value
    return code, redact_all(payload)


def _token_or_network(request: HttpRequest) -> bool:

    if bearer_token_matches(request.META.get("HTTP_AUTHORIZATION"), fastconf.get("STATUS_TOKEN")):
        return True
    return address_allowed(
        request.META, fastconf.get("STATUS_ALLOWED_CIDRS"), fastconf.get("TRUSTED_PROXIES")
    )


def is_staff_request(request: HttpRequest) -> bool:
    """Read-only session lookup: never saves, flushes or cycles the session, sets no cookie."""
    from django.conf import settings

    if "django.contrib.sessions" not in settings.INSTALLED_APPS:
        return False
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return False
    try:
        return _staff_from_session(session_key)
    except Exception:
        logger.warning("Staff lookup for /status/ failed; showing the minimal body.", exc_info=True)
        return False


def _staff_from_session(session_key: str) -> bool:
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )
    from django.utils.crypto import constant_time_compare

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user_id = store.get(SESSION_KEY)
    backend_path = store.get(BACKEND_SESSION_KEY)
    if user_id is None or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    pk = get_user_model()._meta.pk
    assert pk is not None
    user = load_backend(backend_path).get_user(pk.to_python(user_id))
    if (
        user is None
        or not getattr(user, "is_active", False)
        or not getattr(user, "is_staff", False)
    ):
        return False
    session_hash = store.get(HASH_SESSION_KEY)
    if not hasattr(user, "get_session_auth_hash"):
        return True
    if not session_hash:
        return False
    candidates = [user.get_session_auth_hash()]
    fallbacks = getattr(user, "get_session_auth_fallback_hash", None)
    if fallbacks is not None:
        candidates.extend(fallbacks())
    return any(constant_time_compare(session_hash, c) for c in candidates)


def _status_response(request: HttpRequest, report: Report, detailed: bool) -> HttpResponse:
    code, payload = status_payload(report, get_lifecycle(), detailed=detailed)
    return _response(code, _dumps(payload), request, content_type=HEALTH_JSON)


def status(request: HttpRequest) -> HttpResponse:
    """IETF health+json; details for a bearer token, an allowed network or a staff user."""
    _current_state()
    detailed = _token_or_network(request) or is_staff_request(request)
    report = get_runner().get(get_checks, **_runner_kwargs())
    return _status_response(request, report, detailed)


async def astatus(request: HttpRequest) -> HttpResponse:
    from asgiref.sync import sync_to_async

    _current_state()
    detailed = _token_or_network(request)
    if not detailed:
        detailed = await sync_to_async(is_staff_request, thread_sensitive=True)(request)
    report = await get_runner().aget(get_checks, **_runner_kwargs())
    return _status_response(request, report, detailed)


# --- <prefix>metrics ----------------------------------------------------------------------------
_FORBIDDEN = b'{"error":"forbidden"}'


def _metrics_body(request: HttpRequest) -> HttpResponse:
    from django_arena_scale.metrics import _prom

    body = _prom.exposition()
    head = request.method == "HEAD"
    response = HttpResponse(b"" if head else body, content_type=_prom.CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    if not head:
        response["Content-Length"] = str(len(body))
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for the ``/status/`` details' audience; 403 JSON for anyone else."""
    if not (_token_or_network(request) or is_staff_request(request)):
        return _response(403, _FORBIDDEN, request)
    return _metrics_body(request)


async def ametrics(request: HttpRequest) -> HttpResponse:
    from asgiref.sync import sync_to_async

    allowed = _token_or_network(request)
    if not allowed:
        allowed = await sync_to_async(is_staff_request, thread_sensitive=True)(request)
    if not allowed:
        return _response(403, _FORBIDDEN, request)
    # Merging the workers' files is file I/O: off the event loop.
    return await sync_to_async(_metrics_body, thread_sensitive=False)(request)


SYNC: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "live": live,
    "health": health,
    "ready": ready,
    "status": status,
    "metrics": metrics,
}


def safe(handler: Callable[[HttpRequest], HttpResponse], request: HttpRequest) -> HttpResponse:
    """Run a probe handler; any unexpected exception becomes a bare 503, never a traceback."""
    try:
        return handler(request)
    except Exception:
        logger.exception("Probe %s failed unexpectedly.", getattr(handler, "__name__", handler))
        return _response(503, _FAIL, request)


async def asafe(kind: str, request: HttpRequest) -> HttpResponse:
    try:
        if kind == "ready":
            return await aready(request)
        if kind == "status":
            return await astatus(request)
        if kind == "metrics":
            return await ametrics(request)
        return SYNC[kind](request)
    except Exception:
        logger.exception("Probe %s failed unexpectedly.", kind)
        return _response(503, _FAIL, request)
