"""The watch of ``ArenaThreadWorker``: when a serving thread lets the next one in."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from django_arena_scale.lifecycle import worker as worker_module
from django_arena_scale.lifecycle.worker import HELD_UP_LOOKS, ArenaThreadWorker, _asleep, _Slot


def watcher(*slots: _Slot) -> SimpleNamespace:
    return SimpleNamespace(
        _slots=list(slots), _permits=threading.Semaphore(0), _rearm_listeners=lambda: None
    )


def look(w: SimpleNamespace) -> None:
    ArenaThreadWorker._watch(w)


def permits(w: SimpleNamespace) -> int:
    count = 0
    while w._permits.acquire(blocking=False):
        count += 1
    return count


def serving(tid: int, seq: int = 1) -> _Slot:
    slot = _Slot()
    slot.tid, slot.seq, slot.busy = tid, seq, True
    return slot


def test_asleep_reads_the_thread_state() -> None:
    """A thread blocked on an event sleeps; the thread asking (running) does not."""
    blocked = threading.Event()
    started = threading.Event()
    tid: list[int] = []

    def wait() -> None:
        tid.append(threading.get_native_id())
        started.set()
        blocked.wait(10)

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait(10)
    try:
        for _ in range(200):  # until it is inside the wait
            if _asleep(tid[0]):
                break
            threading.Event().wait(0.01)
        assert _asleep(tid[0])
        assert not _asleep(threading.get_native_id())
    finally:
        blocked.set()
        thread.join()


def test_new_request_since_last_look_is_left_alone() -> None:
    slot = serving(threading.get_native_id(), seq=3)
    w = watcher(slot)
    look(w)  # first look: seen 0 -> 3
    assert not slot.detached
    slot.seq = 4  # a request later
    look(w)
    assert not slot.detached
    assert permits(w) == 0


def test_asleep_in_the_same_request_lets_the_next_thread_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "_asleep", lambda tid: True)
    slot = serving(1)
    w = watcher(slot)
    look(w)  # remembers the request
    assert not slot.detached
    look(w)  # same request, asleep
    assert slot.detached
    assert permits(w) == 1
    look(w)  # once only
    assert permits(w) == 0


def test_running_thread_is_let_alone_until_held_up_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_asleep", lambda tid: False)
    slot = serving(1)
    w = watcher(slot)
    look(w)
    for _ in range(HELD_UP_LOOKS - 1):
        look(w)
        assert not slot.detached
    look(w)
    assert slot.detached
    assert permits(w) == 1


def test_idle_thread_is_never_detached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_asleep", lambda tid: True)
    slot = _Slot()  # waiting in epoll, not busy
    w = watcher(slot)
    for _ in range(HELD_UP_LOOKS + 2):
        look(w)
    assert not slot.detached
    assert permits(w) == 0
