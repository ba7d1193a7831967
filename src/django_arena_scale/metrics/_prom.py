"""The metric objects, what records them, and the scrape.

Imported by the Django side only (``MetricsMiddleware``, the ``metrics`` probe, ``StreamRouter``,
the streams), never by the master: prometheus_client picks its value class when first imported
(see ``_process``).  Every label has a bounded set of values: the URL pattern (never the path),
a fixed set of methods, status codes, check and provider names the project declares.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django_arena_scale.metrics._process import MULTIPROC_ENV, multiprocess_dir

# Set but empty means "no directory" to this package (multiprocess_dir() is None), but
# prometheus_client would take it for one and write its files into the working directory.
if os.environ.get(MULTIPROC_ENV) == "":
    del os.environ[MULTIPROC_ENV]

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from django_arena_scale.health._model import Report
    from django_arena_scale.resilience._events import BreakerEvent

logger = logging.getLogger("django_arena_scale.metrics")

__all__ = ["CONTENT_TYPE", "exposition", "install", "record_request"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Whether values live in files shared by every worker (decided when this module is imported).
MULTIPROCESS = multiprocess_dir() is not None

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# --- HTTP --------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "arena_http_requests",
    "HTTP requests answered, by method, URL pattern (or 'unmatched') and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "arena_http_request_duration_seconds",
    "Time from the request reaching MetricsMiddleware to its response being ready (a stream's "
    "headers, not its end), by method and URL pattern.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)

# --- readiness ---------------------------------------------------------------------------------
CHECK_RESULTS = Counter(
    "arena_readiness_check_results",
    "Readiness check evaluations, by check, scope and status (pass, warn, fail).",
    ["check", "scope", "status"],
)
CHECK_DURATION = Histogram(
    "arena_readiness_check_duration_seconds",
    "How long each readiness check took.",
    ["check"],
    buckets=CHECK_BUCKETS,
)
CHECK_FAILING = Gauge(
    "arena_readiness_check_failing",
    "1 when the latest evaluation in this replica failed the check, else 0.",
    ["check", "scope"],
    multiprocess_mode="livemostrecent",
)
CHECKS_READY = Gauge(
    "arena_readiness_checks_ready",
    "1 when the latest evaluation's checks let /ready/ pass (lifecycle aside), else 0.",
    multiprocess_mode="livemostrecent",
)

# --- streams and drain -------------------------------------------------------------------------
SSE_OPEN = Gauge(
    "arena_sse_streams_open",
    "SSE streams open through drain_aware_sse / drain_aware_sse_sync, over live workers.",
    multiprocess_mode="livesum",
)
WS_OPEN = Gauge(
    "arena_websocket_connections_open",
    "WebSocket connections open in DrainAwareConsumerMixin consumers, over live workers.",
    multiprocess_mode="livesum",
)
DRAIN_EVENTS = Counter(
    "arena_drain_events",
    "Drain events: sse_reconnect (a stream ended with the reconnect event), websocket_close "
    "(a WebSocket closed with 1012), shutdown_started (a process began its shutdown hooks).",
    ["event"],
)

# --- LLM calls ---------------------------------------------------------------------------------
LLM_ATTEMPTS = Counter(
    "arena_llm_attempts",
    "LLM call attempts admitted by the breaker, by provider target and outcome (success, retry, "
    "failure, rejected, neutral).",
    ["provider", "outcome"],
)
LLM_SHORT_CIRCUITS = Counter(
    "arena_llm_short_circuits",
    "Attempts refused at once because the provider's breaker was open or half-open.",
    ["provider"],
)
LLM_RETRIES = Counter("arena_llm_retries", "Retries after a retryable failure.", ["provider"])
LLM_FALLBACKS = Counter(
    "arena_llm_fallbacks",
    "Calls that moved on from this provider to the next target of their fallback chain.",
    ["provider"],
)
LLM_TRANSITIONS = Counter(
    "arena_llm_breaker_transitions",
    "Circuit breaker transitions, by provider and new state (closed, open, half-open).",
    ["provider", "state"],
)
LLM_BREAKER_STATE = Gauge(
    "arena_llm_breaker_state",
    "Breaker state, worst over live workers: 0 closed, 1 half-open, 2 open.",
    ["provider"],
    multiprocess_mode="livemax",
)
LLM_FIRST_TOKEN = Histogram(
    "arena_llm_time_to_first_token_seconds",
    "Time from opening a guarded stream to its first chunk, per successful attempt.",
    ["provider"],
    buckets=TTFT_BUCKETS,
)
LLM_STREAM_CHUNKS = Counter(
    "arena_llm_stream_chunks",
    "Chunks (tokens, for token-delta streams) guarded streams passed on to the caller.",
    ["provider"],
)
BREAKER_VALUES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


# --- recording ---------------------------------------------------------------------------------
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration (label children cached per key)."""
    key = (method, route, status)
    found = _children.get(key)
    if found is None:
        found = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_DURATION.labels(method, route),
        )
        _children[key] = found
    found[0].inc()
    found[1].observe(seconds)


def observe_report(report: Report) -> None:
    """Record a fresh readiness evaluation (health._runner's report observer)."""
    from django_arena_scale.health._service import include_shared

    included = include_shared()
    for result in report.results:
        scope = result.scope.value
        CHECK_RESULTS.labels(result.name, scope, result.status.value).inc()
        CHECK_DURATION.labels(result.name).observe(result.duration)
        CHECK_FAILING.labels(result.name, scope).set(1 if result.status.value == "fail" else 0)
    CHECKS_READY.set(0 if report.ready_failures(included) else 1)


def on_llm_event(event: BreakerEvent) -> None:
    """Record a resilience event (a listener of every kind)."""
    kind = event.kind
    name = event.breaker
    if kind == "outcome":
        LLM_ATTEMPTS.labels(name, event.reason or "neutral").inc()
    elif kind == "first_chunk":
        if event.value is not None:
            LLM_FIRST_TOKEN.labels(name).observe(event.value)
    elif kind == "stream_end":
        if event.value:
            LLM_STREAM_CHUNKS.labels(name).inc(event.value)
    elif kind == "retry":
        LLM_RETRIES.labels(name).inc()
    elif kind == "fallback":
        LLM_FALLBACKS.labels(name).inc()
    elif kind == "short_circuit":
        LLM_SHORT_CIRCUITS.labels(name).inc()
    elif kind == "state_change" and event.new_state is not None:
        LLM_TRANSITIONS.labels(name, event.new_state).inc()
        LLM_BREAKER_STATE.labels(name).set(BREAKER_VALUES.get(event.new_state, 0.0))


def stream_opened() -> None:
    SSE_OPEN.inc()


def stream_closed() -> None:
    SSE_OPEN.dec()


def websocket_opened() -> None:
    WS_OPEN.inc()


def websocket_closed() -> None:
    WS_OPEN.dec()


def drain_event(event: str) -> None:
    DRAIN_EVENTS.labels(event).inc()


# --- scrape ------------------------------------------------------------------------------------
class LifecycleCollector(Collector):
    """``arena_lifecycle_state{state}``: 1 for the answering process's state, 0 for the others."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django_arena_scale.lifecycle._state import State, get_lifecycle

        current = get_lifecycle().state
        family = GaugeMetricFamily(
            "arena_lifecycle_state",
            "Lifecycle state of the replica (starting, ready, draining): 1 for the current one.",
            labels=["state"],
        )
        for state in State:
            family.add_metric([state.value], 1.0 if state is current else 0.0)
        yield family


_lifecycle_collector = LifecycleCollector()
if not MULTIPROCESS:
    REGISTRY.register(_lifecycle_collector)


def _refresh_breakers() -> None:
    """This process's breakers as they read now (an open breaker past its timeout: half-open)."""
    from django_arena_scale.resilience._registry import registry

    for name, breaker in registry.breakers().items():
        LLM_BREAKER_STATE.labels(name).set(BREAKER_VALUES.get(breaker.state, 0.0))


def exposition() -> bytes:
    """The Prometheus text of this replica: every worker's files, or this process's registry."""
    try:
        _refresh_breakers()
    except Exception:
        logger.warning("Reading the breaker states failed.", exc_info=True)
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(_lifecycle_collector)
    return generate_latest(registry)


# --- wiring ------------------------------------------------------------------------------------
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Hook the metrics into the readiness runner and the LLM guard (once per process)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        from django_arena_scale.health._runner import add_report_observer
        from django_arena_scale.resilience._events import ALL_KINDS, add_listener

        add_report_observer(observe_report)
        add_listener(on_llm_event, kinds=ALL_KINDS)
        _installed = True
