"""Configuration: layering, validation errors naming the setting, masking of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpp.config import ConfigError, load_settings


def test_defaults_are_the_embedded_zero_setup() -> None:
    cfg = load_settings()
    assert cfg.bus.kind == "embedded"
    url = cfg.database.url.get_secret_value()
    assert url.startswith("sqlite:///") and url.endswith("/vpp-engine/vpp.db")
    assert not url.startswith("sqlite:///.")  # never relative to the working directory
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 8000)


def test_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vpp.yaml"
    path.write_text(
        "bus:\n  kind: kafka\n  kafka:\n    bootstrap_servers: k1:9092\n    linger_ms: 20\n"
        "api:\n  port: 9000\n"
    )
    cfg = load_settings(path)
    assert cfg.bus.kind == "kafka" and cfg.bus.kafka.bootstrap_servers == "k1:9092"
    assert cfg.bus.kafka.linger_ms == 20 and cfg.api.port == 9000
    monkeypatch.setenv("VPP_API__PORT", "9100")
    monkeypatch.setenv("VPP_BUS__KAFKA__LINGER_MS", "7")
    cfg = load_settings(path)
    assert cfg.api.port == 9100 and cfg.bus.kafka.linger_ms == 7
    assert cfg.bus.kafka.bootstrap_servers == "k1:9092"


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "vpp.toml"
    path.write_text('[database]\nurl = "postgresql+psycopg://u:pw@db/vpp"\n')
    assert load_settings(path).database.masked_url() == "postgresql+psycopg://u:***@db/vpp"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("VPP_BUS__KIND", "rabbit", "bus.kind (VPP_BUS__KIND)"),
        ("VPP_API__PORT", "70000", "api.port (VPP_API__PORT)"),
        ("VPP_BUS__KAFKA__LINGER_MS", "soon", "bus.kafka.linger_ms (VPP_BUS__KAFKA__LINGER_MS)"),
        ("VPP_DATABASE__URL", "mysql://x/y", "database (VPP_DATABASE)"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert named in str(err.value)


def test_inconsistent_kafka_timeouts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_BUS__KAFKA__REQUEST_TIMEOUT_MS", "5000")
    with pytest.raises(ConfigError, match="must exceed session_timeout_ms"):
        load_settings()


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vpp.yaml"
    path.write_text("api:\n  prot: 9000\n")
    with pytest.raises(ConfigError, match=r"api\.prot"):
        load_settings(path)


def test_unparseable_file(tmp_path: Path) -> None:
    path = tmp_path / "vpp.yaml"
    path.write_text("api: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_settings(path)


def test_masked_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_DATABASE__URL", "postgresql+psycopg://vpp:hunter2@db:5432/vpp")
    monkeypatch.setenv("VPP_BUS__KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("VPP_BUS__KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("VPP_BUS__KAFKA__SASL_PLAIN_USERNAME", "vpp")
    monkeypatch.setenv("VPP_BUS__KAFKA__SASL_PLAIN_PASSWORD", "s3cret")
    shown = str(load_settings().masked())
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "**********" in shown


def test_unknown_environment_variables_are_refused_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelled ``VPP_DATABSE__URL`` used to be ignored: the engine started on SQLite."""
    from vpp.config import ConfigError, load_settings

    monkeypatch.setenv("VPP_DATABSE__URL", "postgresql+psycopg://x@db/vpp")
    with pytest.raises(
        ConfigError, match=r"VPP_DATABSE__URL: no such setting \(did you mean VPP_DATABASE__URL\?\)"
    ):
        load_settings()
    monkeypatch.delenv("VPP_DATABSE__URL")
    monkeypatch.setenv("VPP_API_KEY", "vpp_x_y")  # the operator CLI's key: not a setting
    load_settings()
