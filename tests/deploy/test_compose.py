"""deploy/compose.yaml: valid Compose, every mount present, one hub config inside and outside.

The schema is the Compose Specification's own JSON schema, vendored in tests/data/compose-spec
(its README names the commit and licence), so no network is needed. Variables are
interpolated from deploy/.env.example first, as `docker compose` does with a .env file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from hub.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMA = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $.
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$$"  # kept: the schema sees the file as compose would before unescaping
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":-", "-"):
            return value if value not in (None, "") or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise AssertionError(f"{name} is required ({arg}) but .env.example lacks it")
            return value
        return value or ""

    return _VAR.sub(one, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    text = (DEPLOY / "compose.yaml").read_text()
    return dict(yaml.safe_load(interpolate(text, env_example())))


def test_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    import json

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema_rs.validator_for(schema)
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_can_fail(compose: dict[str, Any]) -> None:
    """The validator really checks: a typo'd key and a bad condition are refused."""
    import copy
    import json

    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    broken = copy.deepcopy(compose)
    broken["services"]["hub"]["restartt"] = "always"
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["hub"]["depends_on"]["mosquitto"]["condition"] = "service_ready"
    assert not validator.is_valid(broken)


def bind_sources(compose: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                found.append((name, source))
        build = service.get("build")
        if isinstance(build, dict):
            found.append((name, build["context"]))
            found.append((name, str(Path(build["context"]) / build["dockerfile"])))
    return found


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    sources = bind_sources(compose)
    assert len(sources) >= 8  # hub.yaml, mosquitto.conf, three Grafana folders, blueprints, build
    missing = [f"{svc}: {src}" for svc, src in sources if not (DEPLOY / src).exists()]
    assert not missing, missing


def test_named_volumes_restart_healthchecks_and_conditions(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
        if name == "hub-init":
            assert service["restart"] == "no"  # a one-shot
            continue
        assert service.get("restart") == "unless-stopped", name
        health = service.get("healthcheck", {})
        assert health.get("test") or (name == "bench" and health.get("disable")), name
        for dep, spec in service.get("depends_on", {}).items():
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {dep}"
            )
    hub = compose["services"]["hub"]["depends_on"]
    assert hub["mosquitto"]["condition"] == "service_healthy"
    assert hub["hub-init"]["condition"] == "service_completed_successfully"
    assert compose["services"]["homeassistant"]["profiles"] == ["homeassistant"]


def test_mosquitto_uses_deploy_mosquitto_files_unchanged(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    service = compose["services"]["mosquitto"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert mounts["/etc/mosquitto/mosquitto.conf"] == "./mosquitto/mosquitto.conf"
    # Every path the config names is a mounted volume (or the tmpfs for the pid file).
    for key in ("password_file", "acl_file", "persistence_location", "pid_file"):
        path = re.search(rf"^{key}\s+(\S+)", conf, re.M)
        assert path, key
        target = path.group(1).rstrip("/")
        covered = [m for m in [*mounts, *service.get("tmpfs", [])] if target.startswith(m)]
        assert covered, f"{key} {target} is not inside a volume of the mosquitto service"
    assert "allow_anonymous false" in conf


def test_influxdb_initialised_from_env(compose: dict[str, Any]) -> None:
    env = compose["services"]["influxdb"]["environment"]
    dot = env_example()
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == dot["INFLUXDB_ORG"]
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == dot["INFLUXDB_BUCKET"]
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == dot["INFLUXDB_TOKEN"]
    assert compose["services"]["hub"]["environment"]["HUB_INFLUX__TOKEN"] == dot["INFLUXDB_TOKEN"]


def test_grafana_datasource_variables_are_all_set(compose: dict[str, Any]) -> None:
    source = (REPO / "dashboards/grafana/provisioning/datasources/influxdb.yaml").read_text()
    wanted = set(re.findall(r"\$\{(\w+)\}", source))
    env = compose["services"]["grafana"]["environment"]
    assert wanted and wanted <= set(env), wanted - set(env)


def test_the_same_hub_config_works_inside_and_outside(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = DEPLOY / "hub.yaml"
    inside = {k: str(v) for k, v in compose["services"]["hub"]["environment"].items() if k != "TZ"}
    inside["HUB_DATA_DIR"] = "/data"  # from the image
    config = load_config(path, environ=inside)
    assert config.broker.url == "mqtt://mosquitto:1883"
    assert config.broker.username == "hub" and config.broker.password is not None
    assert config.influx.enabled and config.influx.url == "http://influxdb:8086"
    assert str(config.store_path) == "/data/hub.db"
    outside = load_config(path, environ={})
    assert outside.broker.url is None  # a managed Mosquitto, as `hub run` by hand
    assert not outside.influx.enabled
    assert outside.broker.client_id == config.broker.client_id == "hub"
    # systemd: the unit's environment
    unit = load_config(path, environ={"HUB_DATA_DIR": "/var/lib/hub"})
    assert str(unit.store_path) == "/var/lib/hub/hub.db"
