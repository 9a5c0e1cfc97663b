"""docker-compose.kafka.yml, checked against the code: stages, settings, ports, Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.kafka.topology import STAGE_NAMES
from pipeline.settings import LocalKafkaSettings
from tests.unit.settings_env import settings_env_names, settings_from

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards"


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (compose accepts a mapping or KEY=VALUE list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {name: str(value) for name, value in raw.items()}


def stage_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Stage name -> the service running ``pipeline run <stage>``."""
    found: dict[str, dict[str, Any]] = {}
    for service in compose["services"].values():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["run"]:
            assert len(command) == 2, f"a stage service runs exactly one stage: {command}"
            found[command[1]] = service
    return found


def pipeline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the pipeline's image (they read the settings)."""
    image = compose["services"]["validate"]["image"]
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == image
    }


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports the service publishes (``HOST:CONTAINER``) or exposes."""
    published = {int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", [])}
    return published | {int(port) for port in service.get("expose", [])}


def prometheus_targets() -> dict[str, tuple[int, dict[str, str]]]:
    """Target host -> (port, static labels) over every static scrape config."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets: dict[str, tuple[int, dict[str, str]]] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[host] = (int(port), static.get("labels", {}))
    return targets


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka listener list (``NAME://host:port,...``) -> name -> (host, port)."""
    parsed: dict[str, tuple[str, int]] = {}
    for listener in value.split(","):
        name, address = listener.split("://", 1)
        host, port = address.rsplit(":", 1)
        parsed[name] = (host, int(port))
    return parsed


def test_one_service_runs_each_stage_of_the_topology() -> None:
    assert sorted(stage_services(load_compose())) == sorted(STAGE_NAMES)


def test_stage_services_are_named_after_their_stage() -> None:
    compose = load_compose()
    for stage, service in stage_services(compose).items():
        assert compose["services"][stage] is service


def test_every_pipeline_variable_is_a_settings_field() -> None:
    known = settings_env_names()
    for name, service in pipeline_services(load_compose()).items():
        unknown = {
            variable
            for variable in environment(service)
            if variable.upper().startswith("PIPELINE_") and variable.upper() not in known
        }
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"


def test_every_pipeline_service_environment_builds_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for service in pipeline_services(load_compose()).values():
        settings_from(environment(service), monkeypatch)


def test_stages_reach_kafka_on_its_internal_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load_compose()
    kafka = environment(compose["services"]["kafka"])
    bound = listeners(kafka["KAFKA_LISTENERS"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    for name, service in pipeline_services(compose).items():
        bootstrap = settings_from(environment(service), monkeypatch).kafka.bootstrap_servers
        host, port = bootstrap.rsplit(":", 1)
        listener = next(
            (listener for listener, address in advertised.items() if address == (host, int(port))),
            None,
        )
        assert listener is not None, f"{name}: {bootstrap} is not advertised ({advertised})"
        assert host == "kafka", f"{name} must use the containers' listener, not {bootstrap}"
        assert bound[listener][1] == int(port), f"Kafka does not listen on {bootstrap}"


def test_kafka_image_is_the_version_the_local_broker_runs() -> None:
    image = load_compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{LocalKafkaSettings.model_fields['version'].default}"


def test_topics_are_applied_from_the_code_before_any_stage_starts() -> None:
    compose = load_compose()
    assert compose["services"]["topics"]["command"] == ["topics", "apply"]
    for stage, service in stage_services(compose).items():
        dependency = service["depends_on"]["topics"]
        assert dependency["condition"] == "service_completed_successfully", stage


def test_stage_http_endpoint_is_reachable_and_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    for stage, service in stage_services(load_compose()).items():
        env = environment(service)
        settings = settings_from(env, monkeypatch)
        assert settings.http.enabled, stage
        assert settings.http.host == "0.0.0.0", f"{stage} must listen beyond loopback"
        assert env["OTEL_SERVICE_NAME"] == f"pipeline-{stage}"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")


def test_http_port_is_the_published_port_and_the_prometheus_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets = prometheus_targets()
    stages = stage_services(load_compose())
    assert sorted(targets) == sorted(stages), "Prometheus scrapes exactly the stage services"
    for stage, service in stages.items():
        port = settings_from(environment(service), monkeypatch).http.port
        assert container_ports(service) == {port}, f"{stage} publishes other than its port {port}"
        target_port, labels = targets[stage]
        assert target_port == port, f"Prometheus scrapes {stage}:{target_port}, not {port}"
        assert labels.get("stage") == stage


def test_stages_stop_after_their_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    for stage, service in stage_services(load_compose()).items():
        drain = settings_from(environment(service), monkeypatch).stage.shutdown_drain_timeout_s
        grace = service["stop_grace_period"]
        assert grace.endswith("s"), grace
        # runner.py gives uvicorn the drain plus 5 s; compose must not kill before that.
        assert float(grace[:-1]) > drain + 5, stage


def test_observability_services_mount_the_deploy_assets() -> None:
    services = load_compose()["services"]
    mounts = {
        name: {
            volume.split(":")[0]: volume.split(":")[1]
            for volume in service.get("volumes", [])
            if volume.startswith("./")
        }
        for name, service in services.items()
    }
    assert "./deploy/prometheus" in mounts["prometheus"]
    for source in mounts["prometheus"] | mounts["grafana"]:
        assert (ROOT / source).is_dir(), source
    # Grafana's dashboard provider reads the folder the dashboards are mounted at.
    dashboards_at = mounts["grafana"]["./deploy/grafana/dashboards"]
    for provider_file in GRAFANA_DASHBOARD_PROVIDERS.glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert provider["options"]["path"] == dashboards_at


def test_the_order_api_trusts_the_key_the_api_token_service_signs_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = load_compose()["services"]
    api_env, token_env = environment(services["api"]), environment(services["api-token"])
    api = settings_from(api_env, monkeypatch).api
    signer = settings_from(token_env, monkeypatch).api
    assert not api.auth_disabled
    assert api.auth_issuer == signer.auth_issuer
    assert api.auth_audience == signer.auth_audience
    key_dir = services["api-token"]["command"][
        services["api-token"]["command"].index("--key-dir") + 1
    ]
    assert str(api.auth_jwks_file) == f"{key_dir}/jwks.json"
    volume = next(v for v in services["api"]["volumes"] if v.startswith("api-auth:"))
    assert volume == f"api-auth:{key_dir}:ro"
    assert services["api"]["depends_on"]["api-token"]["condition"] == (
        "service_completed_successfully"
    )
    for name, service in pipeline_services(load_compose()).items():
        assert "PIPELINE_API_AUTH_DISABLED" not in environment(service), name


def test_the_api_keeps_its_state_in_the_postgres_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.ingress.database import database_url

    services = load_compose()["services"]
    api, postgres = services["api"], services["postgres"]
    url = database_url(settings_from(environment(api), monkeypatch).api)
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "postgres"
    assert url.port == 5432
    database = environment(postgres)
    assert (url.username, url.password, url.database) == (
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
        database["POSTGRES_DB"],
    )
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
