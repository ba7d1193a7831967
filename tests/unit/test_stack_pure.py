"""Pure parts of the local stack: upstream edits, control files, ports, argv, table."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from django_arena_scale.deploy._server import WSGI_WORKER
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.stack import _control as control
from django_arena_scale.stack import _upstreams as upstreams
from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._runner import (
    LocalStack,
    StackOptions,
    find_binary,
    free_port_range,
    port_in_use,
)

INCLUDE = """# comment mentioning server 127.0.0.1:21001 here
server 127.0.0.1:21001 max_fails=3 fail_timeout=30s max_conns=200;
server 127.0.0.1:21002 max_fails=3 fail_timeout=30s max_conns=200;
server 127.0.0.1:210031 max_fails=3;
"""


def test_upstreams_set_down_marks_only_that_server() -> None:
    """Marking one address down appends ``down`` to its line only."""
    text = upstreams.set_down(INCLUDE, "127.0.0.1:21002", True)
    assert "server 127.0.0.1:21002 max_fails=3 fail_timeout=30s max_conns=200 down;" in text
    assert text.count(" down;") == 1


def test_upstreams_set_down_is_idempotent() -> None:
    """Marking twice gives the same text as once."""
    once = upstreams.set_down(INCLUDE, "127.0.0.1:21001", True)
    assert upstreams.set_down(once, "127.0.0.1:21001", True) == once


def test_upstreams_set_up_restores_the_original() -> None:
    """Down then up restores the include byte for byte."""
    down = upstreams.set_down(INCLUDE, "127.0.0.1:21001", True)
    assert upstreams.set_down(down, "127.0.0.1:21001", False) == INCLUDE


def test_upstreams_port_prefix_is_not_confused() -> None:
    """Port 21003 does not match the line of port 210031."""
    with pytest.raises(LookupError, match="21003"):
        upstreams.set_down(INCLUDE, "127.0.0.1:21003", True)


def test_upstreams_is_down_reads_the_flag() -> None:
    """is_down reflects the mark."""
    down = upstreams.set_down(INCLUDE, "127.0.0.1:21001", True)
    assert (
        upstreams.is_down(down, "127.0.0.1:21001"),
        upstreams.is_down(down, "127.0.0.1:21002"),
    ) == (True, False)


def test_control_send_without_stack_names_the_dir(tmp_path: Path) -> None:
    """Acting on a directory without stack.json is a clear error."""
    with pytest.raises(StackError, match=r"no stack\.json"):
        control.send(tmp_path, "kill", "web-1", timeout=0.1)


def test_control_send_unknown_action_lists_choices(tmp_path: Path) -> None:
    """An unknown action names itself and the valid ones."""
    with pytest.raises(StackError, match=r"'explode'.*rolling-restart"):
        control.send(tmp_path, "explode")


def test_control_targeted_action_needs_target(tmp_path: Path) -> None:
    """kill without a replica name is refused."""
    with pytest.raises(StackError, match="needs a target"):
        control.send(tmp_path, "kill")


def test_control_pending_and_answer_round_trip(tmp_path: Path) -> None:
    """A written request is seen as pending and its answer removes it."""
    directory = control.control_dir(tmp_path)
    directory.mkdir()
    control.write_json_atomic(directory / "abc.json", {"action": "kill", "target": "web-1"})
    [(path, body)] = control.pending(tmp_path)
    control.answer(path, ok=True, message="done")
    assert body == {"action": "kill", "target": "web-1"}
    assert json.loads((directory / "abc.done").read_text()) == {"ok": True, "message": "done"}
    assert control.pending(tmp_path) == []


def test_write_json_atomic_leaves_no_temp(tmp_path: Path) -> None:
    """The state file is written by rename: only stack.json remains."""
    control.write_json_atomic(tmp_path / "stack.json", {"url": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]


def test_port_in_use_detects_listener() -> None:
    """A bound listening socket makes its port busy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use(sock.getsockname()[1])


def test_free_port_range_skips_busy_port() -> None:
    """The range found never contains a busy port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        start = free_port_range(3, start=busy - 1, stop=busy + 100)
        assert busy not in range(start, start + 3)


def test_find_binary_missing_explicit_path_names_it() -> None:
    """A wrong --nginx path is named in the error."""
    with pytest.raises(StackError, match="'/nonexistent/nginx'"):
        find_binary("nginx", "/nonexistent/nginx")


def test_find_binary_missing_on_path_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the binary anywhere the error says what to install."""
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(StackError, match="apt-get install redis-server"):
        find_binary("redis-server")


def _stack(tmp_path: Path, **spec: object) -> LocalStack:
    base = DeploymentSpec(
        target="local", local_port=18080, local_base_port=21000, local_redis_port=21100,
        status_port=21200, wsgi_app="proj.wsgi:application", asgi_app="proj.asgi:application",
        **spec,  # type: ignore[arg-type]
    )  # fmt: skip
    return LocalStack(base, tmp_path, StackOptions(python="/py"))


def test_replica_argv_binds_loopback_port(tmp_path: Path) -> None:
    """Each replica's gunicorn binds its own 127.0.0.1 port."""
    stack = _stack(tmp_path, replicas=2, topology="single")
    argv = stack.replica_argv("web-2")
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:21002"


def test_replica_argv_uses_uvicorn_worker_for_stream_pool(tmp_path: Path) -> None:
    """Stream replicas of the split topology run the lifecycle UvicornWorker on the ASGI app."""
    stack = _stack(tmp_path, replicas=1, stream_replicas=1)
    argv = stack.replica_argv("stream-1")
    assert "django_arena_scale.lifecycle.uvicorn.UvicornWorker" in argv
    assert argv[-1] == "proj.asgi:application"


def test_replica_argv_uses_gthread_for_web_pool(tmp_path: Path) -> None:
    """API replicas of the split topology run gthread on the WSGI app."""
    stack = _stack(tmp_path, replicas=1)
    argv = stack.replica_argv("web-1")
    assert argv[argv.index("--worker-class") + 1] == WSGI_WORKER
    assert argv[-1] == "proj.wsgi:application"


def test_replica_env_sets_name_drain_file_and_redis(tmp_path: Path) -> None:
    """A replica learns its name, its own drain file and the local Redis URLs."""
    stack = _stack(tmp_path, replicas=2, topology="single")
    env = stack.replica_env("web-2")
    assert env["ARENA_REPLICA_NAME"] == "web-2"
    assert env["ARENA_SCALE_DRAIN_FILE"].endswith("run/web-2.drain")
    assert env["SESSION_REDIS_URL"].startswith("redis://127.0.0.1:211")


def test_replica_env_user_env_cannot_override_drain_file(tmp_path: Path) -> None:
    """--env cannot break the rolling restart by moving the drain file."""
    stack = _stack(tmp_path, replicas=1, topology="single")
    stack.options.env = {"ARENA_SCALE_DRAIN_FILE": "/elsewhere", "ARENA_TOKEN_DELAY": "0.01"}
    env = stack.replica_env("web-1")
    assert (env["ARENA_SCALE_DRAIN_FILE"] != "/elsewhere", env["ARENA_TOKEN_DELAY"]) == (
        True,
        "0.01",
    )


def test_stack_state_has_the_documented_keys(tmp_path: Path) -> None:
    """stack.json carries url, nginx_pid, replicas and redis."""
    stack = _stack(tmp_path, replicas=1, topology="single")
    stack.write_state()
    state = json.loads((tmp_path / "stack.json").read_text())
    assert {"url", "nginx_pid", "replicas", "redis"} <= set(state)
    assert state["url"] == "http://127.0.0.1:18080/"


def test_unknown_replica_lists_known_ones(tmp_path: Path) -> None:
    """Acting on a replica that does not exist names the valid ones."""
    stack = _stack(tmp_path, replicas=1, topology="single")
    with pytest.raises(StackError, match="'web-9'"):
        stack.replica("web-9")


def test_upstreams_disabled_until_reads_the_last_disable_of_that_server() -> None:
    """nginx's 'temporarily disabled' warnings give when a server rejoins (+1 s resolution)."""
    import time

    def line(stamp: str, port: int) -> str:
        return (
            f"{stamp} [warn] 10#10: *5 upstream server temporarily disabled while connecting "
            f'to upstream, client: 127.0.0.1, server: _, request: "GET / HTTP/1.1", '
            f'upstream: "http://127.0.0.1:{port}/api/ping/", host: "x"'
        )

    log = "\n".join(
        [
            line("2026/12/04 08:00:00", 21001),
            "2026/12/04 08:00:01 [error] 10#10: *6 connect() failed (111: Connection refused)",
            line("2026/12/04 08:00:05", 21001),
            line("2026/12/04 08:00:09", 21002),
        ]
    )
    base = time.mktime(time.strptime("2026/12/04 08:00:05", "%Y/%m/%d %H:%M:%S"))
    assert upstreams.disabled_until(log, "127.0.0.1:21001", 30) == base + 31
    assert upstreams.disabled_until(log, "127.0.0.1:2100", 30) is None
    assert upstreams.disabled_until(log, "127.0.0.1:21003", 30) is None


def test_upstreams_served_since_reads_who_answered_after_when() -> None:
    """The access log's last $upstream_addr answered; 502/504 are nginx's own answers."""
    import time

    def line(stamp: str, status: int, upstream: str) -> str:
        return (
            f'127.0.0.1 - - [{stamp} +0000] "GET /api/ping/ HTTP/1.1" {status} 12 "-" "ua" '
            f"rid=abc upstream={upstream} urt=0.001 rt=0.001"
        )

    log = "\n".join(
        [
            line("04/Dec/2026:09:00:00", 200, "127.0.0.1:21001"),
            line("04/Dec/2026:09:00:05", 200, "127.0.0.1:21001, 127.0.0.1:21002"),
            line("04/Dec/2026:09:00:06", 502, "127.0.0.1:21003"),
        ]
    )
    at = time.mktime(time.strptime("04/Dec/2026:09:00:03 +0000", "%d/%b/%Y:%H:%M:%S %z"))
    assert upstreams.served_since(log, "127.0.0.1:21002", at)
    assert not upstreams.served_since(log, "127.0.0.1:21001", at)  # only before, or tried
    assert not upstreams.served_since(log, "127.0.0.1:21003", at)  # nginx's 502
    assert upstreams.served_since(log, "127.0.0.1:21001", at - 10)


def test_free_port_range_from_a_start_near_the_top_wraps_around() -> None:
    """A stack on a high base port (an ephemeral one from the OS) asks for ports above 60000:
    the search goes up to 65535, then wraps around, instead of failing."""
    assert free_port_range(1, start=60320) >= 60320
    wrapped = free_port_range(3, start=65534)
    assert 1024 <= wrapped < 65534
