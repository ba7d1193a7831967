"""Metrics and request ids in one process: labels, ids, the log filter, access to metrics."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import Client, RequestFactory
from django.urls import path, re_path
from prometheus_client.parser import text_string_to_metric_families

from django_arena_scale.health._model import Check
from django_arena_scale.metrics import (
    MetricsMiddleware,
    mark_worker_dead,
    method_label,
    prepare_multiprocess_dir,
    route_label,
)
from django_arena_scale.requestid import (
    JSONFormatter,
    RequestIDFilter,
    RequestIDMiddleware,
    clean_request_id,
    current_request_id,
    request_id_var,
)

TOKEN = "metrics-test-token"
log = logging.getLogger("tests.observability")


def ping(request: HttpRequest) -> JsonResponse:
    log.warning("handling ping")
    return JsonResponse({"request_id": current_request_id()})


def item(request: HttpRequest, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"ok": True})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Any:
        log.warning("streaming")
        yield b"chunk"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("api/ping/", ping),
    path("api/items/<int:pk>/", item),
    re_path(r"^legacy/(?P<slug>[a-z]+)/$", item),
    path("stream/", stream),
]

MIDDLEWARE = [
    "django_arena_scale.middleware.ProbeMiddleware",
    "django_arena_scale.requestid.RequestIDMiddleware",
    "django_arena_scale.metrics.MetricsMiddleware",
    "django_arena_scale.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(autouse=True)
def _observability_settings(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = MIDDLEWARE
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_CHECKS = [Check("ok", lambda: None)]
    settings.ARENA_SCALE_STATUS_TOKEN = TOKEN
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = []
    settings.ARENA_SCALE_TRUSTED_PROXIES = []


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return _samples(response.content.decode())


def _requests(samples: Any, method: str, route: str, status: str) -> float:
    key = ("arena_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return float(samples.get(key, 0.0))


# --- labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "label"),
    [("GET", "GET"), ("POST", "POST"), ("DELETE", "DELETE"), ("PROPFIND", "other"),
     ("get", "other"), ("", "other"), (None, "other")],
)  # fmt: skip
def test_method_label_is_a_fixed_set(method: str | None, label: str) -> None:
    assert method_label(method) == label


def test_route_label_is_the_pattern_never_the_path(client: Client) -> None:
    """/api/items/7/ and /api/items/8/ count under one pattern; a 404 is 'unmatched'."""
    before = _scrape(client)
    client.get("/api/items/7/")
    client.get("/api/items/8/")
    client.get("/legacy/abc/")
    client.get("/no/such/page/")
    after = _scrape(client)
    pattern = "api/items/<int:pk>/"
    assert _requests(after, "GET", pattern, "200") - _requests(before, "GET", pattern, "200") == 2
    legacy = "^legacy/(?P<slug>[a-z]+)/$"
    assert _requests(after, "GET", legacy, "200") - _requests(before, "GET", legacy, "200") == 1
    assert (
        _requests(after, "GET", "unmatched", "404") - _requests(before, "GET", "unmatched", "404")
        == 1
    )
    routes = {dict(labels).get("route") for name, labels in after if "http_requests" in name}
    assert not any(route and route.startswith("/api") for route in routes)
    assert "api/items/7/" not in routes


def test_route_label_without_match_and_root_pattern() -> None:
    request = RequestFactory().get("/x/")
    assert route_label(request) == "unmatched"

    class Match:
        route = ""

    request.resolver_match = Match()  # type: ignore[assignment]
    assert route_label(request) == "/"


def test_unknown_method_counts_as_other(client: Client) -> None:
    before = _scrape(client)
    client.generic("PROPFIND", "/api/ping/")
    after = _scrape(client)
    assert (
        _requests(after, "other", "api/ping/", "200")
        - _requests(before, "other", "api/ping/", "200")
        == 1
    )


def test_request_duration_histogram_counts_each_request(client: Client) -> None:
    before = _scrape(client)
    client.get("/api/ping/")
    after = _scrape(client)
    key = ("arena_http_request_duration_seconds_count", (("method", "GET"), ("route", "api/ping/")))
    assert after[key] - before.get(key, 0.0) == 1


def test_metrics_middleware_not_used_when_metrics_off(settings: Any) -> None:
    from django.core.exceptions import MiddlewareNotUsed

    settings.ARENA_SCALE_METRICS = False
    with pytest.raises(MiddlewareNotUsed):
        MetricsMiddleware(lambda request: HttpResponse())


# --- /metrics access ---------------------------------------------------------------------------
def test_metrics_anonymous_is_403_json_without_metrics(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"error": "forbidden"}
    assert b"arena_" not in response.content
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("header", ["Bearer wrong", f"Basic {TOKEN}", "Bearer", ""])
def test_metrics_wrong_credentials_are_403(client: Client, header: str) -> None:
    assert client.get("/metrics/", HTTP_AUTHORIZATION=header).status_code == 403


def test_metrics_with_token(client: Client) -> None:
    samples = _scrape(client)
    assert ("arena_lifecycle_state", (("state", "ready"),)) in samples or (
        "arena_lifecycle_state",
        (("state", "starting"),),
    ) in samples


def test_metrics_for_allowed_network(client: Client, settings: Any) -> None:
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403


def test_metrics_forwarded_address_needs_a_trusted_proxy(client: Client, settings: Any) -> None:
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    forged = {"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "10.1.2.3"}
    assert client.get("/metrics", **forged).status_code == 403


@pytest.mark.django_db
def test_metrics_for_staff_only(client: Client) -> None:
    user = get_user_model().objects.create_user("plain", password="x")
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    user.is_staff = True
    user.save()
    client.force_login(user)
    assert client.get("/metrics").status_code == 200


def test_metrics_path_not_answered_when_metrics_off(client: Client, settings: Any) -> None:
    settings.ARENA_SCALE_METRICS = False
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 404
    assert b"arena_" not in response.content


def test_metrics_post_is_405(client: Client) -> None:
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


# --- readiness and LLM metrics -----------------------------------------------------------------
def test_readiness_checks_are_counted(client: Client, settings: Any) -> None:
    from django_arena_scale.health._service import reset_runner

    def broken() -> None:
        raise OSError("down")

    settings.ARENA_SCALE_CHECKS = [Check("ok", lambda: None), Check("flaky", broken)]
    reset_runner()
    before = _scrape(client)
    client.get("/ready/")
    after = _scrape(client)
    fail = ("arena_readiness_check_results_total",
            (("check", "flaky"), ("scope", "replica"), ("status", "fail")))  # fmt: skip
    assert after[fail] - before.get(fail, 0.0) == 1
    assert after[("arena_readiness_check_failing", (("check", "flaky"), ("scope", "replica")))] == 1
    assert after[("arena_readiness_checks_ready", ())] == 0
    assert ("arena_readiness_check_duration_seconds_count", (("check", "ok"),)) in after


def test_llm_attempts_retries_ttft_and_chunks(client: Client) -> None:
    from django_arena_scale.resilience import llm_call, reset

    class RateLimited(Exception):
        status_code = 429

    reset()
    try:
        calls = {"n": 0}

        @llm_call("obs-provider", max_attempts=3, sleep=lambda seconds: None)
        def tokens() -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RateLimited
            yield from ("a", "b", "c")

        client.get("/api/ping/")  # the middleware chain (and the metrics hooks) exist
        before = _scrape(client)
        assert list(tokens()) == ["a", "b", "c"]
        after = _scrape(client)
    finally:
        reset()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("arena_llm_attempts_total", provider="obs-provider", outcome="retry") == 1
    assert delta("arena_llm_attempts_total", provider="obs-provider", outcome="success") == 1
    assert delta("arena_llm_retries_total", provider="obs-provider") == 1
    assert delta("arena_llm_stream_chunks_total", provider="obs-provider") == 3
    assert delta("arena_llm_time_to_first_token_seconds_count", provider="obs-provider") == 1


# --- request ids -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    ["abc", "0f" * 16, "123e4567-e89b-12d3-a456-426614174000", "a.b_c:d-e", "x" * 128],
)
def test_request_id_kept_when_plausible(value: str) -> None:
    assert clean_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 129, "has space", "semi;colon", "new\nline", "tab\t", "é", "<script>",
     "a/b", "a\r\nSet-Cookie: x=1"],
)  # fmt: skip
def test_request_id_replaced_when_not(value: str | None) -> None:
    replaced = clean_request_id(value)
    assert replaced != value
    assert len(replaced) == 32
    assert all(c in "0123456789abcdef" for c in replaced)


def test_request_id_echoed_and_on_the_view(client: Client) -> None:
    response = client.get("/api/ping/", HTTP_X_REQUEST_ID="given-id-1")
    assert response["X-Request-ID"] == "given-id-1"
    assert json.loads(response.content) == {"request_id": "given-id-1"}


def test_request_id_generated_when_missing_or_bad(client: Client) -> None:
    first = client.get("/api/ping/")["X-Request-ID"]
    second = client.get("/api/ping/", HTTP_X_REQUEST_ID="bad id")["X-Request-ID"]
    assert first != second
    assert len(first) == len(second) == 32
    assert current_request_id() is None  # nothing left behind in this thread


def test_request_id_header_setting(client: Client, settings: Any) -> None:
    settings.ARENA_SCALE_REQUEST_ID_HEADER = "X-Correlation-ID"
    response = client.get("/api/ping/", HTTP_X_CORRELATION_ID="corr-1")
    assert response["X-Correlation-ID"] == "corr-1"


def _capture(logger: logging.Logger) -> tuple[logging.Handler, list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIDFilter())
    logger.addHandler(handler)
    return handler, records


def test_filter_puts_request_id_on_records_of_the_request(client: Client) -> None:
    handler, records = _capture(log)
    try:
        client.get("/api/ping/", HTTP_X_REQUEST_ID="log-id-7")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    by_message = {r.getMessage(): r for r in records}
    assert by_message["handling ping"].request_id == "log-id-7"  # type: ignore[attr-defined]
    assert by_message["outside"].request_id == "-"  # type: ignore[attr-defined]


def test_filter_covers_a_streamed_body(client: Client) -> None:
    handler, records = _capture(log)
    try:
        response = client.get("/stream/", HTTP_X_REQUEST_ID="stream-id")
        assert b"".join(response.streaming_content) == b"chunk"  # type: ignore[attr-defined]
    finally:
        log.removeHandler(handler)
    assert [r.request_id for r in records if r.getMessage() == "streaming"] == ["stream-id"]  # type: ignore[attr-defined]


def test_filter_keeps_an_explicit_request_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.request_id = "mine"
    token = request_id_var.set("other")
    try:
        assert RequestIDFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.request_id == "mine"


async def test_request_id_under_asgi(async_client: Any) -> None:
    response = await async_client.get("/api/ping/", headers={"X-Request-ID": "async-id"})
    assert response["X-Request-ID"] == "async-id"
    assert json.loads(response.content) == {"request_id": "async-id"}


def test_json_formatter() -> None:
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom %s", ("x",),
                               None)  # fmt: skip
    record.request_id = "json-id"
    record.status_code = 500
    record.request = object()
    line = JSONFormatter().format(record)
    payload = json.loads(line)
    assert payload["request_id"] == "json-id"
    assert payload["message"] == "boom x"
    assert payload["level"] == "ERROR"
    assert payload["logger"] == "django.request"
    assert payload["status_code"] == 500
    assert "request" not in payload
    assert "\n" not in line


def test_guard_sees_the_request_id_and_adds_the_header() -> None:
    from django_arena_scale.resilience import current_attempt, llm_call, reset

    reset()
    seen: list[Any] = []

    @llm_call("obs-headers", headers_kwarg="extra_headers")
    def call(extra_headers: dict[str, str] | None = None) -> None:
        attempt = current_attempt()
        assert attempt is not None
        seen.append((attempt.request_id, extra_headers))

    token = request_id_var.set("rid-42")
    try:
        call(extra_headers={"X-Other": "1"})
    finally:
        request_id_var.reset(token)
    call()
    reset()
    assert seen == [
        ("rid-42", {"X-Other": "1", "X-Request-ID": "rid-42"}),
        (None, None),
    ]


def test_request_id_middleware_process_hooks() -> None:
    """The hooks StreamRouter runs inline on its fast path."""
    middleware = RequestIDMiddleware(lambda request: HttpResponse())
    request = RequestFactory().get("/", HTTP_X_REQUEST_ID="fast-path")
    token = request_id_var.set(None)
    try:
        middleware.process_request(request)
        assert current_request_id() == "fast-path"
        response = middleware.process_response(request, HttpResponse())
    finally:
        request_id_var.reset(token)
    assert response["X-Request-ID"] == "fast-path"


# --- multiprocess directory --------------------------------------------------------------------
@pytest.fixture
def master_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a server's master: prometheus_client not imported yet."""
    monkeypatch.delitem(sys.modules, "prometheus_client.values", raising=False)


@pytest.mark.usefixtures("master_process")
def test_prepare_multiprocess_dir_empties_stale_files(tmp_path: Any) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "keep.txt").write_text("not ours")
    env: dict[str, str] = {}
    chosen = prepare_multiprocess_dir(str(directory), environ=env)
    assert chosen == str(directory)
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert sorted(os.listdir(directory)) == ["keep.txt"]


@pytest.mark.usefixtures("master_process")
def test_prepare_multiprocess_dir_makes_a_temporary_one() -> None:
    from django_arena_scale.metrics import cleanup_multiprocess_dir

    env: dict[str, str] = {}
    chosen = prepare_multiprocess_dir(environ=env)
    assert os.path.isdir(chosen)
    cleanup_multiprocess_dir(environ=env)
    assert not os.path.exists(chosen)


@pytest.mark.usefixtures("master_process")
def test_prepare_multiprocess_dir_rejects_a_file(tmp_path: Any) -> None:
    from django_arena_scale import ArenaScaleError

    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ArenaScaleError, match="not a directory"):
        prepare_multiprocess_dir(str(path), environ={})


def test_prepare_multiprocess_dir_refuses_after_an_in_memory_import(tmp_path: Any) -> None:
    """prometheus_client imported without the variable: forked workers would not share."""
    import prometheus_client  # noqa: F401

    from django_arena_scale import ArenaScaleError

    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with pytest.raises(ArenaScaleError, match="before PROMETHEUS_MULTIPROC_DIR was set"):
        prepare_multiprocess_dir(environ=env)


def test_mark_worker_dead_removes_only_live_gauges(tmp_path: Any) -> None:
    for name in ("gauge_livesum_41.db", "gauge_livemax_41.db", "counter_41.db",
                 "histogram_41.db", "gauge_livesum_42.db"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    mark_worker_dead(41, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [
        "counter_41.db",
        "gauge_livesum_42.db",
        "histogram_41.db",
    ]


def test_djangos_own_404_record_carries_the_request_id(client: Client) -> None:
    """Django logs a 4xx after the middleware returned: the id is still set then."""
    handler, records = _capture(logging.getLogger("django.request"))
    try:
        client.get("/no/such/page/", HTTP_X_REQUEST_ID="django-404-id")
    finally:
        logging.getLogger("django.request").removeHandler(handler)
    assert [r.request_id for r in records] == ["django-404-id"]  # type: ignore[attr-defined]
    assert current_request_id() is None


def test_empty_multiprocess_dir_variable_writes_no_files_into_the_working_directory(
    tmp_path: Path,
) -> None:
    """``PROMETHEUS_MULTIPROC_DIR=`` (set, empty) is no directory: values stay in memory and
    no ``*.db`` file lands in the working directory (prometheus_client alone would write
    them there)."""
    import subprocess

    script = (
        "from django_arena_scale.metrics import _prom\n"
        "_prom.record_request('GET', 'api/ping/', 200, 0.01)\n"
        "print(_prom.MULTIPROCESS)\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(src), "PROMETHEUS_MULTIPROC_DIR": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
