"""Generated configs pass the real tools: nginx -t, check-jsonschema, and cross-file checks.

nginx resolves upstream host names while reading its config, so the compose variant is tested
in a private mount namespace whose /etc/hosts maps every service to 127.0.0.1 (the machine's
/etc/hosts is never touched).  The local variant is tested as it is, also as user ``nobody``
to prove every path it writes lives inside the output directory.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._crosscheck import problems
from django_arena_scale.deploy._spec import DeploymentSpec, SpecError

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-uvicorn": {"topology": "single", "app_server": "uvicorn"},
    "single-gthread": {"topology": "single"},
    "sticky": {"sticky": True, "trusted_proxies": ("10.0.0.0/8", "fd00::/8")},
    "backups": {"backup_replicas": 2, "stream_replicas": 3},
    "pgbouncer-shared-redis": {"pgbouncer": True, "redis_roles": "shared"},
    "paths": {
        "probe_prefix": "/-/",
        "stream_paths": ("/messages/stream/", "/api/chat/stream/"),
        "auth_paths": ("/auth/", "/accounts/login/"),
        "server_name": "arena.example.com",
    },
    "oss-1.28": {"nginx_profile": "oss-1.28"},
}
MATRIX = [(n, name) for n in (1, 2, 10, 50) for name in VARIANTS]


def _nginx_version() -> tuple[int, ...]:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0,)


NGINX_VERSION = _nginx_version()


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def spec_for(n: int, variant: str, **extra: Any) -> DeploymentSpec:
    return DeploymentSpec(replicas=n, **{**VARIANTS[variant], **extra})


def materialize(files: dict[str, str], root: Path) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def hosts_file(spec: DeploymentSpec, path: Path) -> Path:
    names = ["localhost", *spec.app_services]
    path.write_text("".join(f"127.0.0.1 {name}\n" for name in names))
    return path


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "[warn]" not in output, output
    assert "test is successful" in output, output


def nginx_t_compose(spec: DeploymentSpec, root: Path) -> subprocess.CompletedProcess[str]:
    """nginx -t on the compose variant with service names resolvable in a mount namespace."""
    hosts = hosts_file(spec, root / "hosts")
    conf = root / "nginx" / "nginx.conf"
    script = f'mount --bind "{hosts}" /etc/hosts && exec "{NGINX}" -t -c "{conf}"'
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    return subprocess.run(
        [*unshare, "sh", "-c", script], capture_output=True, text=True, check=False, timeout=60
    )


def nginx_t_local(root: Path, *, user: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [
        NGINX,
        "-t",
        "-p",
        str(root),
        "-c",
        f"{root}/nginx.conf",
        "-e",
        f"{root}/logs/error.log",
    ]
    if user and os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def needs_resolve_support(spec: DeploymentSpec) -> bool:
    return spec.nginx_profile == "oss-1.28" and NGINX_VERSION < (1, 27, 3)


@functools.lru_cache(maxsize=1)
def compose_validator() -> Any:
    """A validator for the compose-spec schema check-jsonschema ships (vendor.compose-spec)."""
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(path.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize(("n", "variant"), MATRIX)
def test_generated_local_nginx_passes_nginx_t(n: int, variant: str, tmp_path: Path) -> None:
    """The loopback nginx.conf passes nginx -t with no [warn]."""
    spec = spec_for(n, variant, target="local")
    assert_clean(nginx_t_local(materialize(render_all(spec).files, tmp_path)))


@pytest.mark.parametrize(("n", "variant"), MATRIX)
def test_generated_compose_nginx_passes_nginx_t(n: int, variant: str, tmp_path: Path) -> None:
    """The compose nginx.conf passes nginx -t with no [warn] (service names resolvable)."""
    spec = spec_for(n, variant)
    if needs_resolve_support(spec):
        pytest.skip(f"'resolve' needs nginx >= 1.27.3; this is {NGINX_VERSION}")
    assert_clean(nginx_t_compose(spec, materialize(render_all(spec).files, tmp_path)))


def test_generated_nginx_with_drained_replica_passes_nginx_t(tmp_path: Path) -> None:
    """Appending ' down' to a server line, as the deploy script does, keeps nginx valid."""
    spec = spec_for(3, "default")
    root = materialize(render_all(spec).files, tmp_path)
    include = root / spec.nginx_servers_include(spec.api_upstream)
    text = include.read_text()
    drained = re.sub(r"^(server web-2:\S+[^;]*);$", r"\1 down;", text, flags=re.M)
    assert drained != text
    include.write_text(drained)
    assert_clean(nginx_t_compose(spec, root))


def test_generated_local_nginx_runs_as_ordinary_user() -> None:
    """As user nobody, nginx -t succeeds: nothing it opens or creates is outside the dir."""
    # pytest's tmp_path lives under a 0700 directory that nobody cannot enter.
    base = Path(tempfile.mkdtemp(prefix="arena-nginx-user-"))
    try:
        root = materialize(render_all(spec_for(2, "default", target="local")).files, base / "o")
        for path in [base, *root.rglob("*"), root]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        assert_clean(nginx_t_local(root, user=True))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_generated_local_nginx_paths_stay_inside(tmp_path: Path) -> None:
    """No directive of the local variant (other than location) names an absolute path."""
    spec = spec_for(2, "paths", target="local")
    files = render_all(spec).files
    absolute = []
    for rel, text in files.items():
        if not rel.endswith((".conf", ".types")):
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0] != "location":
                absolute += [f"{rel}: {line.strip()}" for w in words[1:] if w.startswith("/")]
    assert absolute == []


def test_generated_local_nginx_has_no_user_directive() -> None:
    """No 'user' directive: it would warn (or need root) for an ordinary user."""
    conf = render_all(spec_for(2, "default", target="local")).files["nginx.conf"]
    assert not re.search(r"^\s*user\s", conf, re.M)


def test_generated_compose_files_pass_check_jsonschema(tmp_path: Path) -> None:
    """check-jsonschema --builtin-schema vendor.compose-spec accepts every compose file."""
    paths = []
    for n, variant in MATRIX:
        path = tmp_path / f"compose-{n}-{variant}.yml"
        path.write_text(render_all(spec_for(n, variant)).files["docker-compose.yml"])
        paths.append(str(path))
    proc = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", *paths],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def yaml_cross_problems(spec: DeploymentSpec, files: dict[str, str]) -> list[str]:
    """Independent of crosscheck.py: parse compose with PyYAML and the includes by regex."""
    compose = load_yaml(files["docker-compose.yml"])
    services = compose["services"]
    apps = {
        name
        for name, svc in services.items()
        if str(svc.get("command", [""])[0]) == "gunicorn" and "profiles" not in svc
    }
    servers = set()
    for upstream in (spec.api_upstream, spec.stream_upstream):
        text = files[spec.nginx_servers_include(upstream)]
        servers |= set(re.findall(r"^server ([a-z0-9-]+):\d+", text, re.M))
    found = [f"nginx-only {s}" for s in sorted(servers - apps)]
    found += [f"compose-only {s}" for s in sorted(apps - servers)]
    stop = {svc.get("stop_grace_period") for svc in services.values() if svc["image"] == spec.image}
    chain = spec.chain
    if stop != {f"{chain.stop_grace_period}s"}:
        found.append(f"stop_grace_period {stop}")
    if not chain.app_graceful < chain.server_graceful < chain.stop_grace_period:
        found.append("graceful chain broken")
    if chain.server_keepalive <= chain.nginx_keepalive_timeout:
        found.append("keepalive chain broken")
    listens = re.findall(r"^\s*listen (\S+?)[ ;]", files[f"{spec.nginx_dir}nginx.conf"], re.M)
    if len(listens) != len(set(listens)):
        found.append(f"duplicate listen {listens}")
    ports = [spec.http_port, spec.status_port]
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    if len(published) != len(set(published)) or spec.status_port in published:
        found.append(f"published ports {published} vs {ports}")
    for name, svc in services.items():
        for key in svc.get("environment", {}):
            if re.search("PASSWORD|SECRET|TOKEN", key):
                found.append(f"{name} has {key} inline")
    return found


@pytest.mark.parametrize(("n", "variant"), MATRIX)
def test_generated_files_agree_with_each_other(n: int, variant: str) -> None:
    """Every nginx server is a compose app service and back; chains and ports hold."""
    spec = spec_for(n, variant)
    render = render_all(spec)
    assert (problems(spec, render), yaml_cross_problems(spec, render.files)) == ([], [])


def test_generated_cross_check_catches_a_missing_service() -> None:
    """Dropping a replica from compose is reported by the cross-file check."""
    spec = spec_for(3, "default")
    render = render_all(spec)
    del render.data["docker-compose.yml"]["services"]["web-2"]
    assert problems(spec, render) == ["nginx server 'web-2' is not a compose app service"]


@st.composite
def specs(draw: st.DrawFn) -> DeploymentSpec:
    """Valid specs across the field ranges (rare invalid combinations are redrawn)."""
    graceful = draw(st.integers(2, 120))
    topology = draw(st.sampled_from(["split", "single"]))
    sticky = draw(st.booleans())
    label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
    host = draw(st.one_of(st.just("_"), st.lists(label, min_size=1, max_size=4).map(".".join)))
    ports = draw(st.lists(st.integers(1024, 30000), min_size=3, max_size=3, unique=True))
    fields: dict[str, Any] = {
        "replicas": draw(st.integers(1, 40)),
        "topology": topology,
        "stream_replicas": draw(st.integers(1, 6)),
        "backup_replicas": 0 if sticky else draw(st.integers(0, 3)),
        "sticky": sticky,
        "app_server": "gunicorn"
        if topology == "split"
        else draw(st.sampled_from(["gunicorn", "uvicorn"])),
        "workers": draw(st.integers(1, 16)),
        "threads": draw(st.integers(1, 16)),
        "server_name": host,
        "http_port": ports[0],
        "status_port": ports[1],
        "local_port": ports[2],
        "local_base_port": 40000,
        "local_redis_port": 31000,
        "rate_general": draw(st.integers(1, 100_000)),
        "burst_general": draw(st.integers(0, 1_000_000)),
        "rate_stream": draw(st.integers(1, 100_000)),
        "burst_stream": draw(st.integers(0, 1_000_000)),
        "rate_auth": draw(st.integers(1, 100_000)),
        "burst_auth": draw(st.integers(0, 1_000_000)),
        "conn_per_ip": draw(st.integers(1, 65535)),
        "max_conns": draw(st.integers(1, 100_000)),
        "max_fails": draw(st.integers(1, 100)),
        "fail_timeout": draw(st.integers(1, 3600)),
        "keepalive": draw(st.integers(1, 10_000)),
        "keepalive_timeout": draw(st.one_of(st.none(), st.integers(1, 9))),
        "graceful_timeout": graceful,
        "app_graceful_timeout": draw(st.integers(1, graceful - 1)),
        "stream_read_timeout": draw(st.integers(60, 3600)),
        "pgbouncer": draw(st.booleans()),
        "probe_prefix": draw(st.sampled_from(["/", "/-/", "/_probes/v1/"])),
        "stream_paths": tuple(
            draw(
                st.lists(
                    st.sampled_from(["/messages/stream/", "/api/chat/stream/", "/sse/"]),
                    min_size=1,
                    unique=True,
                )
            )
        ),
        "auth_paths": tuple(
            draw(st.lists(st.sampled_from(["/auth/", "/accounts/", "/api/token/"]), unique=True))
        ),
        "nginx_profile": "oss-1.22",
        "redis_roles": draw(st.sampled_from(["split", "shared"])),
        "trusted_proxies": tuple(
            draw(
                st.lists(st.sampled_from(["10.0.0.0/8", "192.168.0.0/16", "::1/128"]), unique=True)
            )
        ),
    }
    try:
        return DeploymentSpec(**fields)
    except SpecError:
        from hypothesis import reject

        reject()


@pytest.fixture
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("hyp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=specs())
def test_generated_hypothesis_specs_pass_every_validator(
    spec: DeploymentSpec, scratch: Path
) -> None:
    """Random valid specs: nginx -t (both variants), compose schema, cross-file checks."""
    shutil.rmtree(scratch, ignore_errors=True)
    render = render_all(spec)
    files = render.files
    assert problems(spec, render) == []
    assert yaml_cross_problems(spec, files) == []
    compose_validator().validate(load_yaml(files["docker-compose.yml"]))
    assert_clean(nginx_t_compose(spec, materialize(files, scratch / "compose")))
    local = spec.replace(target="local")
    assert_clean(nginx_t_local(materialize(render_all(local).files, scratch / "local")))
