"""The thin Django adapter: provider options from settings, events as a Django signal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from django_arena_scale.resilience import BreakerEvent, GuardConfigError, llm_call
from django_arena_scale.resilience._django import breaker_event
from django_arena_scale.resilience._policy import RetryPolicy
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import isolated_registry


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with isolated_registry():
        yield


def test_django_signal_receives_breaker_events() -> None:
    """Breaker events are sent as the breaker_event signal (sender = breaker name)."""
    received: list[tuple[Any, BreakerEvent]] = []

    def receiver(sender: Any, event: BreakerEvent, **kwargs: Any) -> None:
        received.append((sender, event))

    breaker_event.connect(receiver)
    try:
        get_breaker("p").trip(5)
    finally:
        breaker_event.disconnect(receiver)
    assert [(s, e.kind, e.new_state) for s, e in received] == [("p", "state_change", "open")]


@override_settings(ARENA_SCALE_LLM_PROVIDERS={"openai": {"failure_threshold": 2}})
def test_django_provider_key_inherits_provider_options() -> None:
    """A provider:key breaker uses the provider's settings when it has none of its own."""
    guard = llm_call("openai", key="eu")
    assert guard.breaker(guard.primary).options.failure_threshold == 2


@override_settings(
    ARENA_SCALE_LLM_PROVIDERS={
        "openai": {"failure_threshold": 2},
        "openai:eu": {"failure_threshold": 7},
    }
)
def test_django_provider_key_own_options() -> None:
    """A provider:key entry in settings wins over the provider's."""
    guard = llm_call("openai", key="eu")
    assert guard.breaker(guard.primary).options.failure_threshold == 7


@override_settings(ARENA_SCALE_LLM_PROVIDERS={"openai": 3})
def test_django_provider_options_not_a_dict() -> None:
    """A provider entry that is not a dict fails at decoration time."""
    with pytest.raises(GuardConfigError, match=r"LLM_PROVIDERS\['openai'\] should be a dict"):
        llm_call("openai")


@override_settings(ARENA_SCALE_LLM_PROVIDERS={"azure": {"reset_timeout": -1}})
def test_django_fallback_settings_validated() -> None:
    """Settings of fallback targets are validated at decoration time too."""
    with pytest.raises(GuardConfigError, match="'reset_timeout'"):
        llm_call("openai", fallbacks=["azure"])


@given(
    attempt=st.integers(1, 40),
    hint=st.none() | st.floats(0, 1e6),
    unit=st.floats(0, 1, exclude_max=True),
)
def test_policy_wait_bounds(attempt: int, hint: float | None, unit: float) -> None:
    """A wait is never below the capped hint nor above max(capped hint, backoff_max)."""
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=8, max_retry_after=30)
    wait = policy.wait(attempt, hint, unit)
    capped = 0.0 if hint is None else min(hint, 30)
    assert capped <= wait <= max(capped, 8)
