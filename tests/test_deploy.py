"""The deployment files name real settings with valid values, and the same topology.

The container image and the cluster are configured only through ``VPP_*`` variables; a
typo there would be silently ignored by the environment source at the top level, so each
variable's path is walked through the settings model here, then the whole set is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from vpp.config import ENV_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _compose_env() -> dict[str, str]:
    compose = _documents(DEPLOY / "compose.yaml")[0]
    env: dict[str, str] = {}
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("vpp-engine"):
            env.update({k: str(v) for k, v in service["environment"].items()})
            assert service["command"][0] in ("serve", "simulate", "db"), name
    return env


def _k8s_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for doc in _documents(DEPLOY / "k8s" / "config.yaml"):
        values = doc.get("data") or doc.get("stringData") or {}
        env.update({k: str(v) for k, v in values.items()})
    return env


def _dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return dict(re.findall(r"(VPP_[A-Z_]+)=(\S+)", text))


def _field_path_exists(name: str) -> bool:
    model: type[BaseModel] = Settings
    parts = name.removeprefix(ENV_PREFIX).lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(parts) - 1:
            sub = field.annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return False
            model = sub
    return True


@pytest.mark.parametrize("source", [_compose_env, _k8s_env, _dockerfile_env])
def test_deploy_environment_names_real_settings(
    source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = source()
    assert env, f"{source.__name__} found no VPP_ variables"
    unknown = [k for k in env if not _field_path_exists(k)]
    assert not unknown, f"not settings: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load_settings()
    if "VPP_BUS__KIND" in env:
        assert cfg.bus.kind == "kafka"
        assert cfg.database.url.get_secret_value().startswith("postgresql+psycopg://")


def test_k8s_manifests_use_one_image_and_probe_the_health_endpoints() -> None:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _documents(p)]
    kustomize = next(d for d in docs if d.get("kind") == "Kustomization")
    listed = set(kustomize["resources"])
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    images, args = set(), []
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            images.add(c["image"])
            args.append(c["args"][0])
            if c["args"] == ["serve"]:
                assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert len(images) == 1
    assert sorted(args) == ["db", "serve", "simulate"]


def test_the_engine_runs_as_several_instances_bounded_by_partitions() -> None:
    """Replicas > 1 and no more than the telemetry partitions (an instance without a
    partition owns no site), one pod replaced at a time, a disruption budget on the
    engine, and compose with two engine instances."""
    docs = _documents(DEPLOY / "k8s" / "engine.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    replicas = deployment["spec"]["replicas"]
    partitions = Settings().bus.topics.telemetry.partitions
    assert 1 < replicas <= partitions
    rolling = deployment["spec"]["strategy"]
    assert rolling["type"] == "RollingUpdate" and rolling["rollingUpdate"]["maxSurge"] == 0
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    compose = _documents(DEPLOY / "compose.yaml")[0]
    engines = [s for s in compose["services"].values() if s.get("command") == ["serve"]]
    assert len(engines) >= 2
