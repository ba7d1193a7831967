"""Fixed addresses on the compose network: nginx 1.22 resolves upstream names once, so a
recreated replica must come back at the address nginx resolved (no reload needed)."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _crosscheck as crosscheck
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import MAX_REPLICAS, DeploymentSpec, SpecError

SPECS = {
    "default": DeploymentSpec(),
    "largest": DeploymentSpec(
        replicas=MAX_REPLICAS, stream_replicas=MAX_REPLICAS, backup_replicas=50, pgbouncer=True
    ),
    "single-shared": DeploymentSpec(
        replicas=3, topology="single", app_server="uvicorn", redis_roles="shared"
    ),
    "subnet": DeploymentSpec(replicas=2, compose_subnet="192.168.64.0/20"),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> DeploymentSpec:
    return SPECS[request.param]


def _doc(spec: DeploymentSpec) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(compose.render(spec)[compose.COMPOSE_FILE])


def test_every_long_running_service_has_a_fixed_address_in_the_subnet(
    spec: DeploymentSpec,
) -> None:
    """Each service but the one-off job has one unique ipv4_address: a host of the subnet,
    not the gateway, outside the ip_range Docker allocates from."""
    doc = _doc(spec)
    (ipam,) = doc["networks"][spec.network]["ipam"]["config"]
    subnet = ipaddress.IPv4Network(ipam["subnet"])
    dynamic = ipaddress.IPv4Network(ipam["ip_range"])
    assert str(subnet) == spec.compose_subnet
    assert dynamic.subnet_of(subnet)
    seen = set()
    for name, service in doc["services"].items():
        if name == spec.manage_service:
            assert service["networks"] == [spec.network]  # dynamic, from ip_range
            continue
        address = ipaddress.IPv4Address(service["networks"][spec.network]["ipv4_address"])
        assert address in subnet, name
        assert address not in dynamic, name
        assert address not in (subnet.network_address, subnet.broadcast_address), name
        assert str(address) != ipam["gateway"], name
        seen.add(address)
    assert len(seen) == len(doc["services"]) - 1
    assert crosscheck.problems(spec, render_all(spec)) == []


def test_addresses_do_not_move_when_replica_counts_change() -> None:
    """More web, backup or stream replicas never change an existing service's address."""
    small = compose.fixed_addresses(DeploymentSpec(replicas=2, stream_replicas=1))
    big = compose.fixed_addresses(
        DeploymentSpec(replicas=40, stream_replicas=9, backup_replicas=3, pgbouncer=True)
    )
    assert small.items() <= big.items()


def test_default_subnet_avoids_dockers_default_bridge() -> None:
    """The default subnet is private and does not overlap docker0's 172.17.0.0/16."""
    subnet = ipaddress.IPv4Network(DeploymentSpec().compose_subnet)
    assert subnet.is_private
    assert not subnet.overlaps(ipaddress.IPv4Network("172.17.0.0/16"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("172.17.0.0/20", "overlaps 172.17.0.0/16"),
        ("172.16.0.0/12", "overlaps 172.17.0.0/16"),
        ("10.1.0.0/24", "too few"),
        ("8.8.0.0/16", "not a private network"),
        ("10.1.0.5/20", "host bits zero"),
        ("fd00::/64", "private IPv4 network"),
        ("10.1.0.0/20; rm", "private IPv4 network"),
        ("", "private IPv4 network"),
    ],
)
def test_spec_refuses_bad_compose_subnets(value: str, reason: str) -> None:
    """A bad subnet is refused with a message naming the field, the value and the rule."""
    with pytest.raises(SpecError, match="compose_subnet") as info:
        DeploymentSpec(compose_subnet=value)
    assert reason in str(info.value)
    assert repr(value) in str(info.value)


def test_spec_subnet_from_the_command_line() -> None:
    """The option string reaches the spec and the compose file."""
    spec = DeploymentSpec.from_sources({"compose_subnet": "10.99.16.0/20"})
    assert _doc(spec)["networks"][spec.network]["ipam"]["config"][0]["subnet"] == "10.99.16.0/20"


def test_crosscheck_catches_a_shared_or_missing_address() -> None:
    """The cross-file check fails when two replicas share an address or one has none."""
    spec = DeploymentSpec(replicas=2)

    def with_web2(networks: object) -> list[str]:
        rendered = render_all(spec)
        services = rendered.data[compose.COMPOSE_FILE]["services"]
        if networks is None:
            del services["web-2"]["networks"]
        else:
            services["web-2"]["networks"] = networks
        return crosscheck.problems(spec, rendered)

    web1 = compose.fixed_addresses(spec)["web-1"]
    assert any("share ipv4_address" in p for p in with_web2({spec.network: {"ipv4_address": web1}}))
    assert "compose app service 'web-2' has no fixed ipv4_address" in with_web2(None)
    dynamic = ipaddress.IPv4Network(compose.dynamic_range(spec))
    inside = {spec.network: {"ipv4_address": str(dynamic.network_address + 5)}}
    assert any("in ip_range" in p for p in with_web2(inside))
