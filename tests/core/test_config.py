from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hub.cli import cli
from hub.config import HubConfig
from hub.config.base import parse_bytes, parse_duration
from hub.config.loader import ConfigError, env_overrides, example_config, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text)
    return path


def issues(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ or {})
    return [str(i) for i in info.value.issues]


def test_defaults_are_valid_and_managed() -> None:
    config = load_config(None, environ={})
    assert config.broker.is_managed
    assert config.broker.host_port_tls == ("127.0.0.1", 1883, False)
    assert config.store_path == Path("hub-data/hub.db")


def test_every_field_has_a_description() -> None:
    def walk(model: type, path: str) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation, f"{path}{name}.")

    walk(HubConfig, "")


def test_example_parses_and_equals_defaults(tmp_path: Path) -> None:
    text = example_config()
    assert "# MQTT user name." in text
    config = load_config(write(tmp_path, text), environ={})
    assert config.model_dump() == HubConfig().model_dump()


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1h 30m") == 5400
    assert parse_duration(7) == 7.0
    assert parse_bytes("64MiB") == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5 parsecs")
    with pytest.raises(ValueError):
        parse_duration(-1)


def test_errors_name_path_and_line(tmp_path: Path) -> None:
    found = issues(
        tmp_path, "broker:\n  url: mqtt://x:1883\n  keepalive: 1\nstore:\n  synchronous: fast\n"
    )
    assert any(
        ":3: broker -> keepalive:" in i and "greater than or equal to 5" in i for i in found
    ), found
    assert any(":5: store -> synchronous:" in i and "'fast'" in i for i in found), found


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    found = issues(tmp_path, "broker:\n  urll: mqtt://x\n")
    assert found == [
        f"{tmp_path / 'hub.yaml'}:2: broker -> urll: [urll] is an invalid option for [broker]; did you mean [url]?"
    ]


def test_cross_field_rules(tmp_path: Path) -> None:
    found = issues(tmp_path, "broker:\n  protocol: '3.1.1'\n  shared_group: g\n")
    assert any("shared_group needs MQTT 5" in i for i in found)
    found = issues(tmp_path, "broker:\n  url: http://x\n")
    assert any("mqtt://host:1883" in i for i in found)
    found = issues(tmp_path, "broker:\n  tls:\n    cert_file: /a.pem\n")
    assert any("cert_file and tls.key_file" in i for i in found)


def test_malformed_mapping_is_reported_with_its_path(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        "ingest:\n  mappings:\n    - topic: z2m/+\n      device: '{1}'\n      values: {}\n",
    )
    assert any(
        ":5: ingest -> mappings -> 0 -> values: a mapping needs at least one value" in i
        for i in found
    ), found


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    found = issues(tmp_path, "broker:\n  url: [unclosed\n")
    assert len(found) == 1 and "not valid YAML" in found[0]


def test_env_overrides_apply_and_are_blamed(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={
            "HUB_BROKER__URL": "mqtt://10.0.0.2:1884",
            "HUB_INGEST__BATCH_MAX": "100",
            "HUB_SIMULATE__ENABLED": "true",
        },
    )
    assert config.broker.host_port_tls == ("10.0.0.2", 1884, False)
    assert config.ingest.batch_max == 100 and config.simulate.enabled
    found = issues(tmp_path, "data_dir: x\n", {"HUB_INGEST__BATCH_MAX": "lots"})
    assert found[0].startswith("environment HUB_INGEST__BATCH_MAX: ingest -> batch_max:")
    assert env_overrides({"HUB_BROKER__PASSWORD": "s3cret", "OTHER": "x"}) == {
        ("broker", "password"): ("HUB_BROKER__PASSWORD", "s3cret")
    }


def test_secrets_are_masked(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "broker:\n  url: mqtt://h\n  password: hunter2\n"), environ={}
    )
    assert config.broker.password is not None
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())
    result = CliRunner().invoke(cli, ["config", "show", "-c", str(tmp_path / "hub.yaml")])
    assert result.exit_code == 0 and "hunter2" not in result.output


def test_cli_config_check(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, "broker:\n  url: mqtt://127.0.0.1:1883\n")
    result = runner.invoke(cli, ["config", "check", str(good)])
    assert result.exit_code == 0 and "OK" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  batch_max: 0\n  esphome:\n    topic_prefix: x\n")
    result = runner.invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: ingest -> batch_max" in result.output
    assert (
        f"{bad}:4: ingest -> esphome -> topic_prefix: [topic_prefix] is an invalid option for [ingest -> esphome]; did you mean [topic_prefixes]?"
        in result.output
    )


def test_cli_config_example_is_valid(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "example"])
    assert result.exit_code == 0
    path = write(tmp_path, result.output)
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    load_config(path, environ={})


def test_configuration_reference_is_current() -> None:
    from hub.config.loader import reference_markdown

    path = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert path.read_text() == reference_markdown(), (
        "regenerate: hub config reference > docs/configuration.md"
    )


def test_group_commit_wait_has_bounds(tmp_path: Path) -> None:
    defaults = load_config(None, environ={}).ingest
    assert (defaults.batch_wait, defaults.batch_size) == (0.045, 50)
    assert load_config(write(tmp_path, "ingest:\n  batch_wait: 50ms\n"), environ={}).ingest.batch_wait == 0.05  # fmt: skip
    assert load_config(write(tmp_path, "ingest:\n  batch_wait: 0\n"), environ={}).ingest.batch_wait == 0  # fmt: skip
    assert any("ingest -> batch_wait" in i for i in issues(tmp_path, "ingest:\n  batch_wait: 2s\n"))
    assert any("ingest -> batch_wait" in i for i in issues(tmp_path, "ingest:\n  batch_wait: -1\n"))
    assert any("ingest -> batch_size" in i for i in issues(tmp_path, "ingest:\n  batch_size: 0\n"))
