"""OS signal handlers: installed only on request, they drain then chain the old handler."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from django_arena_scale.lifecycle import _signals as lsignals
from django_arena_scale.lifecycle._hooks import get_hooks
from django_arena_scale.lifecycle._state import Lifecycle, State, reset_lifecycle


@pytest.fixture(autouse=True)
def clean() -> Iterator[Lifecycle]:
    before = signal.getsignal(signal.SIGUSR2)
    lc = reset_lifecycle()
    yield lc
    lsignals.uninstall_signal_handlers()
    signal.signal(signal.SIGUSR2, before)
    reset_lifecycle()
    get_hooks().reset()


def test_signal_handlers_not_installed_by_app_ready() -> None:
    """Loading Django (AppConfig.ready) leaves SIGTERM alone."""
    assert not getattr(signal.getsignal(signal.SIGTERM), "__name__", "").startswith("arena_")


def test_install_from_settings_is_off_by_default() -> None:
    """Without ARENA_SCALE_INSTALL_SIGNAL_HANDLERS nothing is installed."""
    assert lsignals.install_signal_handlers_from_settings() == []


def test_install_from_settings_when_enabled(settings: object) -> None:
    """With the setting on, SIGTERM and SIGINT get the drain handler."""
    settings.ARENA_SCALE_INSTALL_SIGNAL_HANDLERS = True  # type: ignore[attr-defined]
    installed = lsignals.install_signal_handlers_from_settings()
    assert set(installed) == {signal.SIGTERM, signal.SIGINT}


def test_installed_handler_drains_and_chains_previous(clean: Lifecycle) -> None:
    """The signal begins the drain and the server's own handler still runs."""
    seen: list[int] = []

    def previous(sig: int, frame: FrameType | None) -> None:
        seen.append(sig)

    signal.signal(signal.SIGUSR2, previous)
    lsignals.install_signal_handlers([signal.SIGUSR2], run_hooks=False)
    signal.raise_signal(signal.SIGUSR2)
    assert clean.state is State.DRAINING
    assert seen == [signal.SIGUSR2]


def test_uninstall_restores_previous_handler() -> None:
    """uninstall_signal_handlers puts the original handler back."""

    def previous(sig: int, frame: FrameType | None) -> None: ...

    signal.signal(signal.SIGUSR2, previous)
    lsignals.install_signal_handlers([signal.SIGUSR2])
    lsignals.uninstall_signal_handlers()
    assert signal.getsignal(signal.SIGUSR2) is previous


def test_install_twice_keeps_one_handler() -> None:
    """Installing again does not wrap the handler a second time."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    lsignals.install_signal_handlers([signal.SIGUSR2])
    first = signal.getsignal(signal.SIGUSR2)
    lsignals.install_signal_handlers([signal.SIGUSR2])
    assert signal.getsignal(signal.SIGUSR2) is first
