"""The guard's public face: :func:`llm_call` and :class:`LLMGuard` (options, decoration).

How the wrapped function learns its per-attempt timeout: read
:func:`current_attempt_timeout` (a contextvar set around every attempt, and around every
``next()`` of a stream) and hand it to the SDK, e.g. ``client.chat.completions.create(...,
timeout=current_attempt_timeout())``; or pass ``timeout_kwarg="timeout"`` to have the guard
inject it as a keyword argument.  The value is ``attempt_timeout`` shrunk to the time left
before the deadline.  Async attempts are also cut by the guard itself at that timeout.

The decisions live in ``_core`` (one place for every call shape, retries through tenacity);
the four call shapes and their drivers in ``_shapes``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random as _random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from django_arena_scale.resilience._breaker import CircuitBreaker
from django_arena_scale.resilience._classify import Classifier, default_classifier
from django_arena_scale.resilience._context import Target
from django_arena_scale.resilience._errors import GuardConfigError
from django_arena_scale.resilience._policy import (
    PROVIDER_OPTIONS,
    BreakerOptions,
    is_testing,
    split_options,
)
from django_arena_scale.resilience._registry import registry
from django_arena_scale.resilience._shapes import run_async, run_sync, stream_async, stream_sync

__all__ = ["LLMGuard", "llm_call"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class LLMGuard:
    """A configured guard; decorate a function, generator, coroutine or async generator."""

    def __init__(
        self,
        provider: str,
        *,
        key: str | None = None,
        fallbacks: Sequence[Target | str] = (),
        classifier: Classifier | None = None,
        timeout_kwarg: str | None = None,
        headers_kwarg: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        async_sleep: Callable[[float], Awaitable[None]] | None = None,
        random: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        self.primary = Target.parse(Target(provider, key))
        if isinstance(fallbacks, (str, Target)) or not isinstance(fallbacks, Sequence):
            msg = f"fallbacks should be a list of targets, got {fallbacks!r}."
            raise GuardConfigError(msg)
        self.targets: tuple[Target, ...] = (
            self.primary,
            *(Target.parse(f) for f in fallbacks),
        )
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            msg = f"Each target may appear once in a fallback chain, got {names!r}."
            raise GuardConfigError(msg)
        unknown = sorted(set(options) - PROVIDER_OPTIONS)
        if unknown:
            msg = (
                f"llm_call({provider!r}) got unknown option(s) "
                f"{', '.join(repr(u) for u in unknown)}; expected some of "
                f"{', '.join(sorted(PROVIDER_OPTIONS))}."
            )
            raise GuardConfigError(msg)
        if classifier is not None and not isinstance(classifier, Classifier):
            msg = f"classifier should be a Classifier, got {classifier!r}."
            raise GuardConfigError(msg)
        if timeout_kwarg is not None and not (
            isinstance(timeout_kwarg, str) and timeout_kwarg.isidentifier()
        ):
            msg = f"timeout_kwarg should be a keyword name, got {timeout_kwarg!r}."
            raise GuardConfigError(msg)
        if headers_kwarg is not None and not (
            isinstance(headers_kwarg, str) and headers_kwarg.isidentifier()
        ):
            msg = f"headers_kwarg should be a keyword name, got {headers_kwarg!r}."
            raise GuardConfigError(msg)
        for name, value in (("clock", clock), ("sleep", sleep), ("async_sleep", async_sleep)):
            if value is not None and not callable(value):
                msg = f"{name} should be callable, got {value!r}."
                raise GuardConfigError(msg)
        self.classifier = classifier or default_classifier
        self.timeout_kwarg = timeout_kwarg
        self.headers_kwarg = headers_kwarg
        self.clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._async_sleep = async_sleep or asyncio.sleep
        self.random = random or _random.random
        self.options = dict(options)
        # Validate now (decoration time): settings of every target, merged with our options.
        primary_options = {**registry.provider_options(self.primary.name), **options}
        self.policy, _ = split_options(primary_options, owner=f"llm_call({provider!r})")
        self._breakers: dict[str, CircuitBreaker] = {}
        self._generation = -1
        self._breaker_options: dict[str, BreakerOptions] = {}
        for target in self.targets:
            merged = {**registry.provider_options(target.name), **options}
            owner = f"LLM provider {target.name!r}"
            self._breaker_options[target.name] = split_options(merged, owner=owner)[1]
        # Create the breakers now so /status/ lists every guarded provider before its first call.
        for target in self.targets:
            self.breaker(target)

    def __repr__(self) -> str:
        chain = " -> ".join(t.name for t in self.targets)
        return (
            f"<LLMGuard {chain} deadline={self.policy.deadline:g}s "
            f"attempts={self.policy.max_attempts}>"
        )

    def breaker(self, target: Target) -> CircuitBreaker:
        """The breaker of ``target`` (cached until the registry is reset or reconfigured)."""
        if self._generation != registry.generation:
            self._breakers = {}
            self._generation = registry.generation
        found = self._breakers.get(target.name)
        if found is None:
            found = registry.breaker(target.name, self._breaker_options[target.name])
            self._breakers[target.name] = found
        return found

    # --- decoration --------------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        if not callable(func):
            msg = f"llm_call() decorates a callable, got {func!r}."
            raise GuardConfigError(msg)
        for kwarg in (self.timeout_kwarg, self.headers_kwarg):
            if kwarg is not None:
                self._check_accepts(func, kwarg)
        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(func):

            def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                return stream_async(self, func, args, kwargs)

        elif inspect.iscoroutinefunction(func):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await run_async(self, func, args, kwargs)

        elif inspect.isgeneratorfunction(func):

            def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return stream_sync(self, func, args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return run_sync(self, func, args, kwargs)

        functools.update_wrapper(wrapper, func)
        wrapper.llm_guard = self  # type: ignore[union-attr]
        return cast(F, wrapper)

    @staticmethod
    def _check_accepts(func: Callable[..., Any], name: str) -> None:
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # builtins without a signature: trust the caller
            return
        if name in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        msg = f"timeout_kwarg={name!r} but {func.__qualname__}() takes no {name!r} argument."
        raise GuardConfigError(msg)

    def call(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` (a plain function) through the guard."""
        return cast(T, run_sync(self, func, args, kwargs))

    async def acall(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args, **kwargs)`` (a coroutine function) through the guard."""
        return cast(T, await run_async(self, func, args, kwargs))

    # --- tenacity's sleep between attempts: the injected sleep, skipped in test mode ----------

    def _sleep_between(self, seconds: float) -> None:
        if not is_testing() and seconds > 0:
            self._sleep(float(seconds))

    async def _async_sleep_between(self, seconds: float) -> None:
        if not is_testing() and seconds > 0:
            await self._async_sleep(float(seconds))


def llm_call(
    provider: str,
    *,
    key: str | None = None,
    fallbacks: Sequence[Target | str] = (),
    classifier: Classifier | None = None,
    timeout_kwarg: str | None = None,
    headers_kwarg: str | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    async_sleep: Callable[[float], Awaitable[None]] | None = None,
    random: Callable[[], float] | None = None,
    **options: Any,
) -> LLMGuard:
    """Guard calls to ``provider``: ``@llm_call("openai", deadline=30, fallbacks=["azure"])``.

    Works on functions, coroutine functions, generator and async generator functions
    (streams).  A plain function that returns an SDK stream object is guarded as a plain call
    (until it returns); iterate the stream inside a generator function to get stream semantics.
    ``options`` are provider options (see ``PROVIDER_OPTIONS``) overriding
    ``ARENA_SCALE_LLM_PROVIDERS[provider]``; invalid ones raise :class:`GuardConfigError` here.
    ``headers_kwarg`` (e.g. ``"extra_headers"`` for the OpenAI and Anthropic SDKs): the guard
    adds ``X-Request-ID`` (the id of the request being handled, when there is one) to that
    keyword argument's mapping on every attempt, so the provider's logs can be matched.
    ``clock``/``sleep``/``async_sleep``/``random`` are injectable for tests.
    """
    return LLMGuard(
        provider,
        key=key,
        fallbacks=fallbacks,
        classifier=classifier,
        timeout_kwarg=timeout_kwarg,
        headers_kwarg=headers_kwarg,
        clock=clock,
        sleep=sleep,
        async_sleep=async_sleep,
        random=random,
        **options,
    )
