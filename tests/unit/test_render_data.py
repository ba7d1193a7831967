"""The YAML files are written from the very data the cross-file checks read."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from django_arena_scale.deploy import compose, crosscheck, k8s, render_all
from django_arena_scale.deploy._yaml import MERGE, Anchored, Flow, dump_yaml, resolve_merge
from django_arena_scale.deploy.spec import DeploymentSpec, UpstreamMember

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
    assert sorted(rendered.data) == sorted(yaml_paths + includes)
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
