"""DeploymentSpec refuses values that would open the deployment to spoofing or path tricks."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from django_arena_scale.deploy._spec import DeploymentSpec, SpecError, trusted_proxy_problem


@pytest.mark.parametrize(
    "cidr",
    [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/1",
        "8.8.8.0/24",
        "1.2.3.4/32",
        "10.0.0.0/7",  # 10/8 plus public 11/8
        "172.0.0.0/8",
        "100.0.0.0/8",
        "0.0.0.0/8",
        "2001:db8::/32",
        "2000::/3",
        "::ffff:0:0/96",  # IPv4-mapped: spells every IPv4 address
        "fc00::/6",
    ],
)
def test_trusted_proxies_refuse_public_or_too_broad_networks(cidr: str) -> None:
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_sources({"trusted_proxies": cidr})
    message = str(info.value)
    assert message.startswith("trusted_proxies must be a private network")
    assert repr(cidr) in message
    assert "X-Forwarded-For" in message
    assert trusted_proxy_problem(cidr) is not None


def test_trusted_proxies_refused_from_the_setting_too() -> None:
    with pytest.raises(SpecError, match=r"'0\.0\.0\.0/0'"):
        DeploymentSpec.from_sources({}, {"trusted_proxies": ["10.0.0.0/8", "0.0.0.0/0"]})


@pytest.mark.parametrize(
    "cidr",
    [
        "127.0.0.1/32",
        "127.0.0.0/8",
        "10.0.0.0/8",
        "10.1.2.0/24",
        "172.16.0.0/12",
        "192.168.1.0/24",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fd12:3456::/48",
        "fe80::/10",
    ],
)
def test_trusted_proxies_accept_private_networks(cidr: str) -> None:
    assert trusted_proxy_problem(cidr) is None
    assert DeploymentSpec.from_sources({"trusted_proxies": cidr}).trusted_proxies == (cidr,)


@pytest.mark.parametrize("value", [None, 10, "not-a-network", "10.0.0.0/33"])
def test_trusted_proxy_problem_names_bad_types(value: object) -> None:
    problem = trusted_proxy_problem(value)
    assert problem is not None
    assert "IP network" in problem


@pytest.mark.parametrize(
    "prefix",
    [
        "/../",
        "/./",
        "/a/../",
        "/a/./b/",
        "/..",
        "//",
        "/a//b/",
        "/a%2e/",
        "/a?/",
        "/a#/",
        "/a b/",
        "/a\t/",
        "/a\x00/",
        "/a\x7f/",
        "a/",
        "/a",
        "",
        "/\n/",
    ],
)
def test_probe_prefix_refuses_unsafe_paths(prefix: str) -> None:
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_sources({"probe_prefix": prefix})
    assert str(info.value).startswith("probe_prefix must be a URL path")
    assert repr(prefix) in str(info.value)


@pytest.mark.parametrize("field", ["ws_path", "static_url"])
def test_other_url_paths_refuse_dot_segments(field: str) -> None:
    with pytest.raises(SpecError, match=r"without '\.' or '\.\.' segments"):
        DeploymentSpec.from_sources({field: "/x/../"})


@pytest.mark.parametrize("prefix", ["/", "/ops/", "/-/probes/", "/a.b/", "/v1.0/~x/"])
def test_probe_prefix_accepts_plain_paths(prefix: str) -> None:
    assert DeploymentSpec.from_sources({"probe_prefix": prefix}).probe_prefix == prefix


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--trusted-proxies", "0.0.0.0/0"], "trusted_proxies must be a private network"),
        (["--trusted-proxies", "10.0.0.0/8,::/0"], "'::/0' includes every address"),
        (["--probe-prefix", "/../"], "without '.' or '..' segments; got '/../'"),
    ],
)
def test_generate_lb_config_refuses_before_writing(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    out = tmp_path / "deploy"
    with pytest.raises(CommandError) as info:
        call_command("generate_lb_config", "--output", str(out), *argv)
    assert expected in str(info.value)
    assert not out.exists()
