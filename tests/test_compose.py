"""compose.yaml cannot run here (no Docker engine), so check it against the code instead."""

import importlib
from pathlib import Path

import pytest
import yaml

from attestation.settings import AttestationSettings
from edge_gateway.settings import GatewaySettings
from incident.settings import IncidentSettings
from linegate.settings import ENV_PREFIX
from registry.settings import RegistrySettings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    "attestation": AttestationSettings,
    "registry": RegistrySettings,
    "edge-gateway": GatewaySettings,
    "incident": IncidentSettings,
}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.mark.parametrize(("name", "settings_cls"), SERVICES.items())
def test_every_linegate_env_name_is_a_setting_and_the_values_parse(
    compose, name, settings_cls, monkeypatch
):
    env = compose["services"][name]["environment"]
    names = [k for k in env if k.startswith(ENV_PREFIX)]
    assert names, f"{name} has no LINEGATE_ settings"
    unknown = [k for k in names if k[len(ENV_PREFIX) :].lower() not in settings_cls.model_fields]
    assert unknown == [], f"{name}: not settings of {settings_cls.__name__}: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = settings_cls()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.listen_port == int(env["LINEGATE_PORT"]) == settings_cls.default_port
    assert settings.nats_stream_replicas == 3


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_runs_an_existing_app_factory(compose, name):
    module, _, attr = compose["services"][name]["environment"]["APP_FACTORY"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_nats_is_a_three_node_jetstream_cluster(compose):
    nodes = [n for n in compose["services"] if n.startswith("nats-")]
    assert len(nodes) == 3
    conf = (ROOT / "deploy/nats/cluster.conf").read_text()
    assert "jetstream" in conf
    for node in nodes:
        assert f"nats-route://{node}:6222" in conf
    urls = compose["services"]["registry"]["environment"]["LINEGATE_NATS_URL"].split(",")
    assert {u.split("//")[1].split(":")[0] for u in urls} == set(nodes)


def test_services_wait_for_postgres_and_nats(compose):
    for name in SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert "nats-1" in depends


def _mounts(compose, name):
    """Volume name -> mount options ("rw" or "ro") of service ``name``."""
    out = {}
    for spec in compose["services"][name].get("volumes", []):
        volume, _, rest = spec.partition(":")
        _, _, mode = rest.partition(":")
        out[volume] = mode or "rw"
    return out


def test_only_the_incident_service_holds_its_signing_key_and_the_gateway_pins_it_read_only(
    compose,
):
    incident_env = compose["services"]["incident"]["environment"]
    gateway_env = compose["services"]["edge-gateway"]["environment"]
    signing = incident_env["LINEGATE_INCIDENT_ACTION_SIGNING_KEY"]
    public = incident_env["LINEGATE_INCIDENT_ACTION_PUBLIC_KEY"]
    assert gateway_env["LINEGATE_INCIDENT_ACTION_KEY"] == public

    def volume_of(name, path):
        targets = {
            spec.split(":")[1]: spec.split(":")[0]
            for spec in compose["services"][name].get("volumes", [])
        }
        matches = [target for target in targets if path.startswith(target + "/")]
        assert matches, f"{path} is on no volume of {name}"
        return targets[max(matches, key=len)]  # the innermost mount

    signing_volume = volume_of("incident", signing)
    public_volume = volume_of("incident", public)
    assert signing_volume != "linegate-keys"
    for name in compose["services"]:
        if name != "incident":
            assert signing_volume not in _mounts(compose, name), name
            if name != "edge-gateway":
                assert public_volume not in _mounts(compose, name), name
    assert _mounts(compose, "edge-gateway")[public_volume] == "ro"
    assert volume_of("edge-gateway", public) == public_volume
    data_dir = compose["services"]["incident"]["environment"]["LINEGATE_DATA_DIR"]
    assert not signing.startswith(f"{data_dir}/keys/")  # not on the shared keys volume


@pytest.mark.parametrize("name", SERVICES)
def test_every_named_volume_a_service_mounts_exists_in_the_image(compose, name):
    # Docker gives a new named volume the owner of the image's path, and creates a missing path
    # owned by root, which the image's linegate user could not write.
    dockerfile = (ROOT / "Dockerfile").read_text()
    for mount in compose["services"][name].get("volumes", []):
        source, target = str(mount).split(":")[:2]
        if source.startswith((".", "/")):
            continue  # a bind mount: the host's directory
        assert target in dockerfile, f"{name}: {target} (volume {source}) is not made in the image"
