"""What the generated nginx forwards as Host, and the redirects it makes itself.

The local variant is rendered and run by a real nginx on a loopback port other than 80, in
front of a real gunicorn serving a minimal Django app with CsrfViewMiddleware: a browser's
POST (Origin ``http://127.0.0.1:<port>``, CSRF cookie and token) must pass CSRF's Origin
check, which compares the Origin with the Host nginx forwards.
"""

from __future__ import annotations

import http.client
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.stack._runner import free_port_range
from tests.servers import wait_for_port

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

APP = """
import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-not-a-secret-" + "k" * 40,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def token(request):
    return HttpResponse(get_token(request))


def submit(request):
    return HttpResponse("accepted " + request.get_host())


@csrf_exempt
def echo_host(request):
    return HttpResponse("host=" + request.META.get("HTTP_HOST", "<none>"))


urlpatterns = [path("csrf/", token), path("submit/", submit), path("echo-host/", echo_host)]
application = get_wsgi_application()
"""


class Proxied:
    """nginx (rendered local variant, one replica) in front of gunicorn running APP."""

    def __init__(self, root: Path) -> None:
        base = free_port_range(8, start=random.randrange(31000, 41000))
        self.spec = DeploymentSpec(
            target="local",
            replicas=1,
            topology="single",
            local_port=base,
            status_port=base + 1,
            local_redis_port=base + 2,
            local_base_port=base + 4,
        )
        self.port = self.spec.local_port
        root.mkdir(parents=True, exist_ok=True)
        for rel, text in render_all(self.spec).files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        (root / "logs").mkdir(exist_ok=True)
        (root / "csrfapp.py").write_text(APP)
        app_port = self.spec.local_service_port(self.spec.web_names[0])
        self.procs: list[subprocess.Popen[bytes]] = []
        gunicorn = [
            sys.executable, "-m", "gunicorn", "csrfapp:application",
            "--chdir", str(root), "--bind", f"127.0.0.1:{app_port}",
            "--workers", "1", "--log-level", "warning", "--no-control-socket",
        ]  # fmt: skip
        self.procs.append(subprocess.Popen(gunicorn, stderr=subprocess.DEVNULL))
        self.argv = [NGINX, "-p", str(root), "-c", f"{root}/nginx.conf", "-e", f"{root}/logs/e"]
        self.procs.append(subprocess.Popen([*self.argv, "-g", "daemon off;"]))
        wait_for_port(app_port, timeout=30)
        wait_for_port(self.port)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with exactly these headers (Host included)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            found = {k.lower(): v for k, v in response.getheaders()}
            return response.status, found, response.read()
        finally:
            conn.close()

    def raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``request`` as is (HTTP/1.0: no chunking); read until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT if proc.args[0] == NGINX else signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    stack = Proxied(tmp_path_factory.mktemp("nginx-headers"))
    try:
        yield stack
    finally:
        stack.close()


def _get_token(proxied: Proxied, host: str) -> tuple[str, str]:
    status, headers, body = proxied.request("GET", "/csrf/", {"Host": host})
    assert status == 200, body
    cookie = re.search(r"csrftoken=([A-Za-z0-9]+)", headers["set-cookie"])
    assert cookie is not None
    return cookie.group(1), body.decode()


def _post(proxied: Proxied, host: str, origin: str) -> tuple[int, bytes]:
    cookie, token = _get_token(proxied, host)
    headers = {
        "Host": host,
        "Origin": origin,
        "Cookie": f"csrftoken={cookie}",
        "X-CSRFToken": token,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    status, _, body = proxied.request("POST", "/submit/", headers, b"a=1")
    return status, body


def test_browser_post_through_nginx_on_a_non_default_port_passes_csrf(proxied: Proxied) -> None:
    assert proxied.port not in (80, 443)
    host = f"127.0.0.1:{proxied.port}"
    status, body = _post(proxied, host, f"http://{host}")
    assert (status, body) == (200, f"accepted {host}".encode())


def test_csrf_origin_check_still_refuses_another_origin(proxied: Proxied) -> None:
    """The check is live: an Origin with another port than the Host is refused."""
    host = f"127.0.0.1:{proxied.port}"
    status, _ = _post(proxied, host, f"http://127.0.0.1:{proxied.port + 1}")
    assert status == 403


def test_request_without_host_still_sends_one_upstream(proxied: Proxied) -> None:
    """HTTP/1.0 without Host: the app still gets a Host header (nginx's $host)."""
    status, _, body = proxied.raw(b"GET /echo-host/ HTTP/1.0\r\n\r\n")
    assert status == 200, body
    assert body.startswith(b"host=")
    assert body != b"host=<none>"


@pytest.mark.parametrize("path", ["/status", "/auth"])
def test_nginx_redirects_never_reflect_a_forged_host(proxied: Proxied, path: str) -> None:
    """nginx's own slash redirect (/status -> /status/) has a relative Location."""
    status, headers, body = proxied.request("GET", path, {"Host": "evil.example:666"})
    assert b"evil.example" not in body
    assert status in (301, 302, 307, 308), (status, headers)
    assert headers["location"] == f"{path}/"
