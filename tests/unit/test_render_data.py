"""Every file the cross-file checks read is written from the very data they read."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
import yaml

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _crosscheck as crosscheck
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy import _nginx as nginx
from django_arena_scale.deploy import _server as server
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec, UpstreamMember
from django_arena_scale.deploy._yaml import MERGE, Anchored, Flow, dump_yaml, resolve_merge

SPECS = {
    "default": DeploymentSpec(),
    "single-pgbouncer": DeploymentSpec(
        replicas=3, topology="single", app_server="uvicorn", pgbouncer=True, redis_roles="shared"
    ),
}


def _plain(value: Any) -> Any:
    """Data as a YAML reader returns it: merge keys resolved, markers gone."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in resolve_merge(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(SPECS))
def test_render_yaml_text_reads_back_as_the_checked_data(name: str) -> None:
    """docker-compose.yml and every k8s file parse back to Rendered.data."""
    spec = SPECS[name]
    rendered = render_all(spec)
    yaml_paths = [p for p in rendered.files if p.endswith((".yml", ".yaml", ".json"))]
    includes = [spec.nginx_servers_include(u) for u in (spec.api_upstream, spec.stream_upstream)]
    trees = [
        f"{spec.nginx_dir}{name}" for name in ("nginx.conf", "proxy_headers.conf", "mime.types")
    ]
    servers = sorted({spec.server_config_file(s) for s in spec.app_services})
    assert sorted(rendered.data) == sorted(yaml_paths + includes + trees + servers)
    for path in includes:
        lines = [line for line in rendered.files[path].splitlines() if line.startswith("server ")]
        assert [line.split()[1] for line in lines] == [m.address for m in rendered.data[path]]
    doc = yaml.safe_load(rendered.files[compose.COMPOSE_FILE])
    assert doc == _plain(rendered.data[compose.COMPOSE_FILE])
    for path, documents in rendered.data.items():
        if path.startswith("k8s/"):
            assert list(yaml.safe_load_all(rendered.files[path])) == _plain(documents)
    assert rendered.files[compose.COMPOSE_FILE] == compose.render(spec)[compose.COMPOSE_FILE]
    assert {p: t for p, t in rendered.files.items() if p.startswith("k8s/")} == k8s.render(spec)


def test_compose_keeps_one_anchor_block_for_every_app_service() -> None:
    """x-app is written once with &app; each app service merges it (<<: *app)."""
    spec = DeploymentSpec(replicas=3)
    text = compose.render(spec)[compose.COMPOSE_FILE]
    assert text.count("x-app: &app\n") == 1
    assert text.count(": &app") == 1
    merges = len(spec.app_services) + 1  # the replicas and the one-off manage service
    assert text.count("<<: *app\n") == merges
    doc = yaml.safe_load(text)
    assert doc["services"]["web-2"]["image"] == spec.image


def test_dump_yaml_writes_anchors_merges_and_flow_lists_only_where_asked() -> None:
    """A shared plain dict is written twice; an Anchored one once, then aliased."""
    shared = {"a": "1"}
    block = Anchored("base", {"image": "x:1", "test": Flow(["CMD", "true"])})
    text = dump_yaml(
        {"x-base": block, "one": {MERGE: block, "n": shared}, "two": {"n": shared}},
        explicit_start=False,
    )
    assert text == (
        "x-base: &base\n"
        '  image: "x:1"\n'
        '  test: [CMD, "true"]\n'
        "one:\n"
        "  <<: *base\n"
        "  n:\n"
        '    a: "1"\n'
        "two:\n"
        "  n:\n"
        '    a: "1"\n'
    )
    assert yaml.safe_load(text)["one"] == {"image": "x:1", "test": ["CMD", "true"], "n": shared}


def test_crosscheck_reads_the_upstream_members_as_data() -> None:
    """A member with another port, or an empty upstream, is reported (local and compose)."""
    spec = DeploymentSpec(target="local", replicas=2)
    rendered = render_all(spec)
    assert crosscheck.problems(spec, rendered) == []
    path = spec.nginx_servers_include(spec.api_upstream)
    first = rendered.data[path][0]
    rendered.data[path] = (UpstreamMember(first.name, "127.0.0.1:1"), *rendered.data[path][1:])
    assert any(p.startswith("local upstream ports") for p in crosscheck.problems(spec, rendered))

    spec = DeploymentSpec(replicas=2)
    rendered = render_all(spec)
    path = spec.nginx_servers_include(spec.stream_upstream)
    rendered.data[path] = ()
    found = crosscheck.problems(spec, rendered)
    assert f"{path} lists no server" in found
    assert "compose app service 'stream-1' is not an nginx server" in found


def _nginx_statements(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """(depth, words) of each directive and block head, read from nginx text by a tokenizer
    of its own: comments dropped, quoted strings kept whole, ``;``/``{``/``}`` ending words."""
    tokens = re.findall(r"#[^\n]*|'[^']*'|\"[^\"]*\"|[;{}]|[^\s;{}'\"]+", text)
    out: list[tuple[int, tuple[str, ...]]] = []
    depth, words = 0, []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            out.append((depth, tuple(words)))
            words = []
            depth += token == "{"
        elif token == "}":
            depth -= 1
        else:
            words.append(token)
    assert (depth, words) == (0, [])
    return out


def _tree_statements(node: nginx.Block, depth: int = 0) -> list[tuple[int, tuple[str, ...]]]:
    out: list[tuple[int, tuple[str, ...]]] = []
    for child in node.children:
        if isinstance(child, nginx.Directive):
            out.append((depth, (child.name, *child.args)))
        elif isinstance(child, nginx.Block):
            out.append((depth, (child.name, *child.args)))
            out += _tree_statements(child, depth + 1)
    return out


@pytest.mark.parametrize("target", ["compose", "local"])
def test_render_nginx_and_gunicorn_text_reads_back_as_the_checked_data(target: str) -> None:
    """nginx.conf and its includes tokenise back to their trees; every line of a gunicorn
    config that sets something is a setting of its data, with the data's value."""
    spec = DeploymentSpec(target=target, trusted_proxies=("10.0.0.0/8",), replicas=2)
    rendered = render_all(spec)
    trees = {p: d for p, d in rendered.data.items() if isinstance(d, nginx.Block)}
    assert len(trees) == 3
    for path, tree in trees.items():
        assert _nginx_statements(rendered.files[path]) == _tree_statements(tree), path
    configs = {p: d for p, d in rendered.data.items() if isinstance(d, server.ServerConfig)}
    assert sorted(configs) == sorted({spec.server_config_file(s) for s in spec.app_services})
    for path, config in configs.items():
        namespace: dict[str, Any] = {}
        exec(compile(rendered.files[path], path, "exec"), namespace)
        assert {k: namespace[k] for k in config.settings} == config.settings
        assigned = re.findall(r"^([a-z_]+) = ", rendered.files[path], re.M)
        assert assigned == list(config.settings)


def test_nginx_tree_lookups() -> None:
    """The lookups the checks use read the tree nginx.conf is written from."""
    spec = DeploymentSpec(replicas=2, probe_prefix="/-/")
    tree = nginx.build(spec)["nginx/nginx.conf"]
    assert isinstance(tree, nginx.Block)
    http = tree.find("http")
    assert http is not None
    assert [b.args for b in http.blocks("upstream")] == [("django_backend",), ("django_streaming",)]
    assert http.find("upstream", "nope") is None
    assert http.directive_values("proxy_http_version") == [("1.1",)]
    assert tree.all_values("listen") == [(str(spec.http_port), "default_server"), ("8081",)]
    ready = [b for b in tree.locations() if b.args == ("=", "/-/ready/")]
    assert ready[0].directive_values("proxy_read_timeout") == [(f"{spec.probe_timeout}s",)]


def _edit(node: nginx.Block, edit: Any) -> nginx.Block:
    """The tree with each directive replaced by ``edit(directive, parent)`` (None drops it)."""
    children: list[nginx.Node] = []
    for child in node.children:
        if isinstance(child, nginx.Block):
            children.append(_edit(child, edit))
        elif isinstance(child, nginx.Directive):
            new = edit(child, node)
            if new is not None:
                children.append(new)
        else:
            children.append(child)
    return replace(node, children=tuple(children))


def test_crosscheck_reads_nginx_conf_as_data() -> None:
    """A missing upstream include, a listen twice, a probe location lost or with another
    timeout, and no stream-long read timeout are found in the tree, before any text."""
    spec = DeploymentSpec(replicas=2)
    rendered = render_all(spec)
    path = "nginx/nginx.conf"
    assert crosscheck.problems(spec, rendered) == []
    tree = rendered.data[path]

    def no_include(d: nginx.Directive, parent: nginx.Block) -> nginx.Directive | None:
        return None if d.name == "include" and parent.args == ("django_streaming",) else d

    rendered.data[path] = _edit(tree, no_include)
    found = crosscheck.problems(spec, rendered)
    assert found == ["nginx.conf does not include nginx/upstreams/django_streaming.conf"]

    def same_port(d: nginx.Directive, parent: nginx.Block) -> nginx.Directive:
        return replace(d, args=("80",)) if d.name == "listen" else d

    rendered.data[path] = _edit(tree, same_port)
    assert "nginx listens twice on the same port: [('*', 80), ('*', 80)]" in (
        crosscheck.problems(spec, rendered)
    )

    def short_reads(d: nginx.Directive, parent: nginx.Block) -> nginx.Directive:
        return replace(d, args=("5s",)) if d.name == "proxy_read_timeout" else d

    rendered.data[path] = _edit(tree, short_reads)
    found = crosscheck.problems(spec, rendered)
    assert "no nginx location reads streams for stream_read_timeout" in found
    assert (
        f"docker-compose.yml: probe timeout {spec.probe_timeout}s is not nginx's /ready/ one"
        in (found)
    )

    def no_ready(node: nginx.Block) -> nginx.Block:
        children = tuple(
            no_ready(c) if isinstance(c, nginx.Block) else c
            for c in node.children
            if not (isinstance(c, nginx.Block) and c.args == ("=", "/ready/"))
        )
        return replace(node, children=children)

    rendered.data[path] = no_ready(tree)
    assert "docker-compose.yml: nginx.conf has no location = /ready/" in (
        crosscheck.problems(spec, rendered)
    )
    del rendered.data[path]
    assert crosscheck.problems(spec, rendered) == ["nginx/nginx.conf is missing"]


def test_crosscheck_reads_gunicorn_settings_as_data() -> None:
    """graceful_timeout and keepalive are read from each config's settings: missing, not
    above the app's drain, not above nginx's upstream keepalive_timeout, or too long for the
    stop grace period, each is reported."""
    spec = DeploymentSpec(replicas=2)
    rendered = render_all(spec)
    name = "gunicorn.conf.py"
    config = rendered.data[name]
    assert isinstance(config, server.ServerConfig)
    assert crosscheck.problems(spec, rendered) == []

    def settings(**changed: Any) -> server.ServerConfig:
        return replace(config, settings={**config.settings, **changed})

    rendered.data[name] = settings(keepalive=spec.chain.nginx_keepalive_timeout)
    assert crosscheck.problems(spec, rendered) == [
        f"{name}: keepalive {spec.chain.nginx_keepalive_timeout} <= nginx keepalive_timeout"
    ]
    rendered.data[name] = settings(graceful_timeout=spec.app_graceful_timeout)
    assert f"{name}: graceful_timeout {spec.app_graceful_timeout} <= app drain time" in (
        crosscheck.problems(spec, rendered)
    )
    rendered.data[name] = settings(graceful_timeout=spec.chain.stop_grace_period)
    stop = spec.chain.stop_grace_period
    assert f"stop_grace_period {stop}s < drain + {name} graceful_timeout" in (
        crosscheck.problems(spec, rendered)
    )
    rendered.data[name] = replace(
        config, settings={k: v for k, v in config.settings.items() if k != "keepalive"}
    )
    assert crosscheck.problems(spec, rendered) == [f"{name} lacks graceful_timeout or keepalive"]
