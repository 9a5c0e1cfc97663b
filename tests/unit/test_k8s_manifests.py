"""The Kubernetes overlays, rendered with kustomize and checked against the code."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.kafka.topology import STAGE_NAMES, Naming
from pipeline.settings import Settings
from tests.unit.settings_env import settings_env_names, settings_from

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pipeline.json"
# The oldest Kubernetes the manifests must be valid for.
KUBERNETES_VERSION = "1.30"
# KEDA's Kafka scaler names the SASL mechanisms its own way.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}

INSTALL_KUBECTL = (
    "Neither kubectl nor kustomize is on PATH, so the manifests cannot be rendered. Install "
    "kubectl (it embeds kustomize: `kubectl kustomize DIR`) or the kustomize binary."
)
INSTALL_KUBERNETES_VALIDATE = (
    "kubernetes-validate is not installed, so the manifests cannot be checked against the "
    "Kubernetes schemas. Install the dev dependency: `pip install kubernetes-validate` "
    "(it bundles the schemas and works offline)."
)

Manifest = dict[str, Any]


@functools.cache
def render(overlay: str) -> tuple[Manifest, ...]:
    """Every object the overlay renders (kustomize runs once per overlay)."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(OVERLAYS / overlay)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(OVERLAYS / overlay)]
    else:
        pytest.fail(INSTALL_KUBECTL)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"kustomize failed on {overlay}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=sorted(path.name for path in OVERLAYS.iterdir() if path.is_dir()))
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    """Name -> object, for one kind."""
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def stage_deployments(manifests: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """Stage name -> its StatefulSet (the one whose container runs ``pipeline run STAGE``)."""
    found: dict[str, Manifest] = {}
    for deployment in of_kind(manifests, "StatefulSet").values():
        args = pipeline_container(deployment).get("args", [])
        assert args[:1] == ["run"], f"{deployment['metadata']['name']} runs {args}"
        assert len(args) == 2, f"a stage StatefulSet runs exactly one stage: {args}"
        found[args[1]] = deployment
    return found


def pipeline_container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: Manifest = containers[0]
    return container


def container_environment(manifests: tuple[Manifest, ...], deployment: Manifest) -> dict[str, str]:
    """The environment the container starts with: envFrom ConfigMaps, then literal env.
    (Values from Secrets are left out: they are not in the manifests.)"""
    config_maps = of_kind(manifests, "ConfigMap")
    container = pipeline_container(deployment)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        if reference:
            assert reference["name"] in config_maps, f"no ConfigMap {reference['name']}"
            environment.update(config_maps[reference["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = str(variable["value"])
    return environment


def stage_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[Manifest, Settings]]:
    """Stage -> (its StatefulSet, the settings its container builds)."""
    manifests = render(overlay)
    return {
        stage: (
            deployment,
            settings_from(container_environment(manifests, deployment), monkeypatch),
        )
        for stage, deployment in stage_deployments(manifests).items()
    }


def named_port(container: Manifest, port: int | str) -> int:
    """A probe's or Service's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    numbers = {entry["name"]: entry["containerPort"] for entry in container.get("ports", [])}
    assert port in numbers, f"no container port named {port!r}"
    return int(numbers[port])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_each_stage_of_the_topology_has_a_deployment(overlay: str) -> None:
    deployments = stage_deployments(render(overlay))
    assert sorted(deployments) == sorted(STAGE_NAMES)
    for stage, deployment in deployments.items():
        assert deployment["metadata"]["name"] == f"pipeline-{stage}"


def test_pods_run_restricted(overlay: str) -> None:
    for stage, deployment in stage_deployments(render(overlay)).items():
        pod = deployment["spec"]["template"]["spec"]
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True, stage
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", stage
        assert pod.get("automountServiceAccountToken") is False, stage
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag), f"{stage}: {flag}"
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container.get("securityContext", {})
            where = f"{stage}/{container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser")) != 0, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("privileged") in (None, False), where
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where


def test_pods_drain_before_they_are_killed(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for stage, (deployment, settings) in stage_settings(overlay, monkeypatch).items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == 45, stage
        # runner.py gives uvicorn the drain plus 5 s; Kubernetes must not kill before that.
        assert grace > settings.stage.shutdown_drain_timeout_s + 5, stage


def test_probes_hit_health_and_ready_on_the_http_port(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stage, (deployment, settings) in stage_settings(overlay, monkeypatch).items():
        container = pipeline_container(deployment)
        assert settings.http.enabled, stage
        assert settings.http.host == "0.0.0.0", f"{stage} must listen beyond loopback"
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            http_get = container[probe]["httpGet"]
            assert http_get["path"] == path, f"{stage} {probe}"
            assert named_port(container, http_get["port"]) == settings.http.port, stage
        resources = container.get("resources", {})
        assert resources.get("requests"), f"{stage} requests no resources"
        assert resources.get("limits", {}).get("memory"), f"{stage} has no memory limit"


def test_stage_environment_names_real_settings_and_validates(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = settings_env_names()
    manifests = render(overlay)
    for stage, deployment in stage_deployments(manifests).items():
        container = pipeline_container(deployment)
        environment = container_environment(manifests, deployment)
        names = set(environment) | {variable["name"] for variable in container.get("env", [])}
        unknown = {n for n in names if n.upper().startswith("PIPELINE_") and n.upper() not in known}
        assert not unknown, f"{stage} sets variables no setting reads: {sorted(unknown)}"
        assert environment.get("OTEL_SERVICE_NAME") == f"pipeline-{stage}"
        settings_from(environment, monkeypatch)  # raises when a value is invalid


def test_scaled_objects_follow_the_topology(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(overlay)
    scaled_objects = {
        scaled["spec"]["scaleTargetRef"]["name"]: scaled
        for scaled in of_kind(manifests, "ScaledObject").values()
    }
    trigger_authentications = of_kind(manifests, "TriggerAuthentication")
    for stage, (deployment, settings) in stage_settings(overlay, monkeypatch).items():
        scaled = scaled_objects[deployment["metadata"]["name"]]
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], stage
        # More consumers than partitions sit idle.
        assert spec["maxReplicaCount"] <= settings.topics.partitions, stage
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka", stage
        metadata = trigger["metadata"]
        naming = Naming.of(settings.topics)
        assert metadata["consumerGroup"] == naming.group(stage) == stage
        assert metadata["topic"] == naming.source(stage)
        environment = container_environment(manifests, deployment)
        if "bootstrapServersFromEnv" in metadata:
            bootstrap = environment[metadata["bootstrapServersFromEnv"]]
        else:
            bootstrap = metadata["bootstrapServers"]
        assert bootstrap == settings.kafka.bootstrap_servers, stage
        protocol = settings.kafka.security_protocol
        if protocol.startswith("SASL"):
            assert settings.kafka.sasl_mechanism is not None, stage
            assert metadata.get("sasl") == KEDA_SASL[settings.kafka.sasl_mechanism], stage
            auth = trigger.get("authenticationRef", {}).get("name")
            assert auth in trigger_authentications, f"{stage}: no TriggerAuthentication {auth}"
        else:
            assert metadata.get("sasl", "none") == "none", stage
        expected_tls = "enable" if protocol in ("SSL", "SASL_SSL") else "disable"
        assert metadata.get("tls", "disable") == expected_tls, stage


def test_services_monitors_and_budgets_select_their_stage(overlay: str) -> None:
    manifests = render(overlay)
    services = of_kind(manifests, "Service")
    monitors = of_kind(manifests, "ServiceMonitor")
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for stage, deployment in stage_deployments(manifests).items():
        name = deployment["metadata"]["name"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels), stage
        service = services[name]
        assert selects(service["spec"]["selector"], pod_labels), stage
        (service_port,) = service["spec"]["ports"]
        container = pipeline_container(deployment)
        assert named_port(container, service_port["targetPort"]) == named_port(container, "http")
        monitor = monitors[name]
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == service_port["name"], stage
        assert endpoint["path"] == "/metrics", stage
        assert any(r.get("targetLabel") == "stage" for r in endpoint.get("relabelings", [])), stage
        assert selects(budgets[name]["spec"]["selector"]["matchLabels"], pod_labels), stage


def test_network_policy_admits_monitoring_on_the_http_port(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = of_kind(render(overlay), "NetworkPolicy")["order-pipeline"]
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {port["port"] for rule in spec["ingress"] for port in rule["ports"]}
    egress_ports = {port["port"] for rule in spec["egress"] for port in rule.get("ports", [])}
    assert 53 in egress_ports, "DNS"
    for stage, (deployment, settings) in stage_settings(overlay, monkeypatch).items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(spec["podSelector"]["matchLabels"], pod_labels), stage
        assert ingress_ports == {settings.http.port}, stage
        bootstrap_ports = {
            int(a.rsplit(":", 1)[1]) for a in settings.kafka.bootstrap_servers.split(",")
        }
        assert bootstrap_ports <= egress_ports, f"{stage} cannot reach Kafka"


def test_dashboard_config_map_carries_the_dashboard(overlay: str) -> None:
    dashboards = [
        config_map
        for config_map in of_kind(render(overlay), "ConfigMap").values()
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (content,) = dashboards[0]["data"].values()
    assert json.loads(content) == json.loads(DASHBOARD.read_text())


def test_dev_runs_one_plaintext_replica_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render("dev")
    for stage, (deployment, settings) in stage_settings("dev", monkeypatch).items():
        assert deployment["spec"]["replicas"] == 1, stage
        assert settings.kafka.security_protocol == "PLAINTEXT", stage
    for scaled in of_kind(manifests, "ScaledObject").values():
        assert scaled["spec"]["maxReplicaCount"] == 1


def test_prod_runs_at_least_three_sasl_ssl_replicas_per_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifests = render("prod")
    for stage, (deployment, settings) in stage_settings("prod", monkeypatch).items():
        assert deployment["spec"]["replicas"] >= 3, stage
        assert settings.kafka.security_protocol == "SASL_SSL", stage
        assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512", stage
        requests = pipeline_container(deployment)["resources"]["requests"]
        dev_requests = pipeline_container(stage_deployments(render("dev"))[stage])["resources"]
        assert requests != dev_requests["requests"], stage
    for scaled in of_kind(manifests, "ScaledObject").values():
        assert scaled["spec"]["minReplicaCount"] >= 3
    assert "pipeline-kafka-credentials" not in of_kind(manifests, "Secret"), (
        "prod must not apply the placeholder over the real credentials"
    )


def test_built_in_kinds_match_the_kubernetes_schemas(overlay: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(INSTALL_KUBERNETES_VALIDATE)
    errors = []
    for doc in render(overlay):
        group = doc["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):
            continue  # a custom resource (KEDA, Prometheus Operator): no bundled schema
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {error.message}")
    assert not errors, "\n".join(errors)


def test_each_stage_pod_joins_its_group_as_a_static_member_named_after_itself(
    overlay: str,
) -> None:
    """A StatefulSet's pod names are stable, so ``group.instance.id`` from the pod name
    lets a restarted pod take its partitions back without a rebalance. (A Deployment's
    pod names change on every restart: each new pod would be a new static member, and
    the old one's partitions would wait out the session timeout.)"""
    manifests = render(overlay)
    for stage, statefulset in stage_deployments(manifests).items():
        assert statefulset["spec"]["serviceName"] == f"pipeline-{stage}"
        env = {v["name"]: v for v in pipeline_container(statefulset).get("env", [])}
        source = env["PIPELINE_STAGE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]
        assert source["fieldPath"] == "metadata.name", stage
    for scaled in of_kind(manifests, "ScaledObject").values():
        assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_prod_never_disables_the_order_api_authentication() -> None:
    rendered = json.dumps(render("prod"))
    assert "PIPELINE_API_AUTH_DISABLED" not in rendered.upper()


def api_deployment(manifests: tuple[Manifest, ...]) -> Manifest:
    """The order API's Deployment (the one whose container runs ``pipeline serve-api``)."""
    (deployment,) = (
        doc
        for doc in of_kind(manifests, "Deployment").values()
        if pipeline_container(doc).get("args") == ["serve-api"]
    )
    return deployment


def test_the_api_takes_its_database_url_from_a_secret_only(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(overlay)
    deployment = api_deployment(manifests)
    container = pipeline_container(deployment)
    env = {variable["name"]: variable for variable in container["env"]}
    reference = env["PIPELINE_API_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (reference["name"], reference["key"]) == ("pipeline-api-database", "url")
    assert not reference.get("optional"), "without its database the API must not start"
    environment = container_environment(manifests, deployment)
    assert "PIPELINE_API_DATABASE_URL" not in environment, "a URL literal would leak"
    assert "pipeline-api-database" not in of_kind(manifests, "Secret"), (
        "the real Secret is created out of band; a placeholder would blank it"
    )
    known = settings_env_names()
    names = set(environment) | set(env)
    unknown = {n for n in names if n.upper().startswith("PIPELINE_") and n.upper() not in known}
    assert not unknown, f"the API sets variables no setting reads: {sorted(unknown)}"
    settings = settings_from(environment, monkeypatch)
    assert settings.api.host == "0.0.0.0"
    assert settings.api.database_migrate, "replicas migrate at start, under a lock"


def test_the_api_is_probed_served_and_reachable(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(overlay)
    deployment = api_deployment(manifests)
    container = pipeline_container(deployment)
    settings = settings_from(container_environment(manifests, deployment), monkeypatch)
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert named_port(container, http_get["port"]) == settings.api.port
    # /ready waits up to the database timeout for its answer.
    assert container["readinessProbe"]["timeoutSeconds"] > settings.api.database_timeout_s
    pod = deployment["spec"]["template"]
    service = of_kind(manifests, "Service")["pipeline-api"]
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert named_port(container, port["targetPort"]) == settings.api.port
    budget = of_kind(manifests, "PodDisruptionBudget")["pipeline-api"]
    assert selects(budget["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    policy = of_kind(manifests, "NetworkPolicy")["order-pipeline-api"]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {settings.api.port}
    assert 5432 in {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    context = pod["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_prod_runs_several_api_replicas_sharing_one_database() -> None:
    assert api_deployment(render("prod"))["spec"]["replicas"] >= 2
