"""IdleProbeResponse: /live/ and /health/ skip request_finished only when it is pure cleanup."""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished
from django.test import RequestFactory

from django_arena_scale.health import _service as service
from django_arena_scale.lifecycle._state import Lifecycle, reset_lifecycle


@pytest.fixture(autouse=True)
def ready_lifecycle() -> Iterator[Lifecycle]:
    lifecycle = reset_lifecycle(Lifecycle())
    lifecycle.mark_ready()
    yield lifecycle
    reset_lifecycle()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records every request_finished.send (the receivers still run)."""
    calls: list[Any] = []
    original = request_finished.send

    def send(sender: Any, **named: Any) -> Any:
        calls.append(sender)
        return original(sender, **named)

    monkeypatch.setattr(request_finished, "send", send)
    return calls


@pytest.fixture
def django_receivers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """request_finished with only the receivers a plain Django project connects."""
    kept = [
        entry
        for entry in request_finished.receivers
        if _key(entry[1]) in service.DJANGO_CLEANUP or _key(entry[1]) is None
    ]
    monkeypatch.setattr(request_finished, "receivers", kept)
    assert service.only_django_cleanup()


def _key(ref: Any) -> tuple[str, str] | None:
    receiver = ref() if isinstance(ref, weakref.ReferenceType) else ref
    if receiver is None:
        return None
    return (getattr(receiver, "__module__", ""), getattr(receiver, "__qualname__", ""))


def _probe(kind: str, method: str = "GET") -> Any:
    request = RequestFactory().generic(method, f"/{kind}/")
    return service.live(request) if kind == "live" else service.health(request)


@pytest.mark.parametrize("kind", ["live", "health"])
def test_idle_probe_close_skips_request_finished_with_only_django_cleanup(
    kind: str, sends: list[Any], django_receivers_only: None
) -> None:
    """With only Django's cleanup receivers, closing a live/health response sends no signal."""
    response = _probe(kind)
    response.close()
    assert (response.closed, sends) == (True, [])


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["live", "health"])
def test_idle_probe_close_sends_request_finished_to_another_receiver(
    kind: str, django_receivers_only: None
) -> None:
    """A receiver that is not Django's cleanup (an APM agent, Sentry) still gets the signal."""
    seen: list[Any] = []

    def apm_receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(sender)

    request_finished.connect(apm_receiver)
    try:
        _probe(kind).close()
    finally:
        request_finished.disconnect(apm_receiver)
    assert len(seen) == 1


def test_idle_probe_close_ignores_a_dead_receiver(django_receivers_only: None) -> None:
    """A weakly connected receiver that was garbage-collected does not count."""

    def gone(sender: Any, **kwargs: Any) -> None:
        pass

    request_finished.connect(gone)
    del gone
    gc.collect()
    assert service.only_django_cleanup()


def test_idle_probe_close_runs_the_resource_closers(django_receivers_only: None) -> None:
    """The response's own closers (request.close from the handler) still run."""
    closed: list[bool] = []
    response = _probe("live")
    response._resource_closers.append(lambda: closed.append(True))
    response.close()
    assert closed == [True]


@pytest.mark.django_db
def test_ready_response_always_sends_request_finished(
    sends: list[Any], django_receivers_only: None, settings: Any
) -> None:
    """/ready/ may use the request thread's connections: its close() always sends the signal."""
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    response = service.ready(RequestFactory().get("/ready/"))
    response.close()
    assert (type(response) is service.IdleProbeResponse, len(sends)) == (False, 1)


@pytest.mark.django_db
def test_live_through_the_wsgi_handler_sends_no_request_finished(
    sends: list[Any], django_receivers_only: None
) -> None:
    """Through Django's WSGI handler and the middleware stack, /live/ ends without the signal."""
    handler = WSGIHandler()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/live/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
    }
    response = handler(environ, lambda status, headers: None)
    body = b"".join(response)
    response.close()
    assert (body, sends) == (b'{"status":"pass"}', [])
