"""deploy/kubernetes/ tells the truth: every manifest is valid Kubernetes and starts what Muster is.

No cluster runs where these tests run, so the manifests are checked as data: each document
against the Kubernetes JSON schemas (kubernetes-validate bundles them, strict mode: an unknown
field fails, offline), then against the code they start — every command is one the `muster`
parser accepts and together they are the processes `muster up` runs, every MUSTER_ name is a
setting Muster reads, the ConfigMap and Secret load as settings pointing at a Redis Cluster with
rq on a single-node Redis, secrets live only in the Secret, and every Deployment has its probes,
disruption budget and grace period.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml
from test_deploy import ADMIN_TOKEN, MUSTER_NAME, SECRET_NAME

from muster.cli import OPS_WORKER, WORKER_KINDS, build_parser
from muster.errors import ConfigError
from muster.settings import Settings, known_variables, load_settings
from muster.supervisor import CHILDREN, MAIL_IN

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
SCHEMA_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes the manifests claim (autoscaling/v2 and policy/v1 are GA well before)
and the newest whose schemas kubernetes-validate bundles."""
BATCH_GRACE_S = 60
"""A worker's batch (MUSTER_CONSUMER_BATCH events, deliveries waiting up to
MUSTER_WEBHOOK_TIMEOUT each) finishes and is acknowledged within this after SIGTERM."""


# --- reading the manifests ----------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p != KUSTOMIZATION)


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every document of every manifest."""
    found = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for _, r in documents() if r["kind"] == kind}


def deployments() -> dict[str, dict[str, Any]]:
    return resources("Deployment")


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from workload["spec"]["template"]["spec"]["containers"]


def muster_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in deployments().items():
        for container in containers(deployment):
            if container["command"][0] == "muster":
                yield name, container


def config_data() -> dict[str, str]:
    data: dict[str, str] = resources("ConfigMap")["muster-config"]["data"]
    return data


def secret_data() -> dict[str, str]:
    data: dict[str, str] = resources("Secret")["muster-secrets"]["stringData"]
    return data


def environment_of(container: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    """What the container's process sees: its envFrom sources in order, then its own env."""
    sources = {
        ("configMapRef", "muster-config"): config_data(),
        ("secretRef", "muster-secrets"): secrets,
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ((ref, target),) = source.items()
        env.update(sources[(ref, target["name"])])
    for variable in container.get("env", []):
        env[variable["name"]] = variable["value"]
    return env


MAIL_IN_SECRET = "mail-in-" + ADMIN_TOKEN
"""What an operator puts in the Secret for replies by email (its placeholder is empty)."""


def settings_of(container: dict[str, Any]) -> Settings:
    secrets = {
        **secret_data(),
        "MUSTER_ADMIN_TOKEN": ADMIN_TOKEN,
        "MUSTER_MAIL_IN_SECRET": MAIL_IN_SECRET,
    }
    return load_settings(environment_of(container, secrets))


# --- schema ---------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    images = {image["name"] for image in kustomization["images"]}
    for name, deployment in deployments().items():
        for container in containers(deployment):
            if container["command"][0] == "muster":
                assert container["image"] in images, name


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize(
    ("where", "resource"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_every_manifest_is_valid_kubernetes(
    where: str, resource: dict[str, Any], version: str
) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{where}: {resource['kind']} {path}: {error.message}")


def test_the_schema_check_catches_a_wrong_field() -> None:
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    api = deployments()["muster-api"]
    misspelt = msgspec.json.decode(msgspec.json.encode(api))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(misspelt, SCHEMA_VERSIONS[-1], strict=True)
    wrong_type = msgspec.json.decode(msgspec.json.encode(api))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="integer"):
        kubernetes_validate.validate(wrong_type, SCHEMA_VERSIONS[-1], strict=True)


def test_selectors_match_their_pods_and_references_exist() -> None:
    claims = set(resources("PersistentVolumeClaim"))
    for name, workload in {**deployments(), **resources("StatefulSet")}.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    for name, service in resources("Service").items():
        assert any(
            service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in [*deployments().values(), *resources("StatefulSet").values()]
        ), f"Service {name} selects no pod"


# --- what runs ------------------------------------------------------------------------------------
def test_each_process_kind_is_a_deployment_of_its_own() -> None:
    commands = []
    for name, container in muster_containers():
        try:
            args = build_parser().parse_args(container["command"][1:])
        except SystemExit:
            pytest.fail(f"{name}: `{' '.join(container['command'])}` is not a muster command")
        assert callable(args.run)
        commands.append(tuple(container["command"][1:]))
    assert sorted(commands) == sorted([*CHILDREN, MAIL_IN]), "one Deployment per process kind"
    assert {("worker", kind) for kind in (*WORKER_KINDS, OPS_WORKER)} <= set(commands)


def test_the_api_is_replicated_probed_autoscaled_and_scraped() -> None:
    api = deployments()["muster-api"]
    assert api["spec"]["replicas"] >= 2
    (container,) = containers(api)
    settings = settings_of(container)
    assert settings.api_host == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == settings.api_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert settings.metrics_address == "0.0.0.0:9464"
    assert ports["metrics"] == 9464
    service = resources("Service")["muster-api"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}
    (hpa,) = resources("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "muster-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = resources("PodDisruptionBudget").values()
    for name, deployment in deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name} needs one PodDisruptionBudget"
        (budget,) = matching
        if deployment["spec"]["replicas"] == 1:
            # minAvailable 1 on a single pod would block every node drain forever.
            assert budget["spec"].get("maxUnavailable") == 1, name
        else:
            assert budget["spec"].get("minAvailable", 0) >= 1, name


def test_workers_get_time_to_finish_their_batch() -> None:
    for name, container in muster_containers():
        if container["command"][1] != "worker":
            continue
        grace = deployments()[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= BATCH_GRACE_S, name
        settings = settings_of(container)
        if container["command"][2] == "delivery":
            assert grace >= 3 * settings.webhook_timeout_s, name


def test_the_audit_worker_never_runs_twice_and_keeps_its_archive() -> None:
    audit = deployments()["muster-worker-audit"]
    assert audit["spec"]["replicas"] == 1
    assert audit["spec"]["strategy"]["type"] == "Recreate"
    (container,) = containers(audit)
    settings = settings_of(container)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in audit["spec"]["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[str(settings.archive_dir)]]


# --- configuration --------------------------------------------------------------------------------
def test_every_muster_variable_in_the_manifests_is_a_setting() -> None:
    known = set(known_variables())
    for path in [*manifest_files(), KUSTOMIZATION]:
        unknown = set(MUSTER_NAME.findall(path.read_text())) - known
        assert not unknown, f"{path.name} names settings Muster does not read: {unknown}"
    set_here = set(config_data()) | set(secret_data())
    for _, container in muster_containers():
        set_here |= {variable["name"] for variable in container.get("env", [])}
    assert set_here - known == set()


def test_every_process_loads_its_settings_on_a_cluster_with_rq_on_one_redis() -> None:
    for name, container in muster_containers():
        settings = settings_of(container)
        cluster = settings.redis_cluster
        assert cluster is not None, f"{name}: MUSTER_REDIS_URL must be redis+cluster://"
        assert settings.rq_url is not None
        assert settings.rq_url.startswith("redis://"), f"{name}: rq has no cluster mode"
        assert settings.partitions >= 3, "at least one partition per master of a 3-master cluster"
        assert settings.write_replicas >= 1, "an accepted write has reached a replica"
    rq_host = config_data()["MUSTER_RQ_REDIS_URL"].split("//")[1].split(":")[0]
    assert rq_host in resources("Service"), "MUSTER_RQ_REDIS_URL names the rq Redis Service"


def test_secrets_live_only_in_the_secret_and_its_placeholder_is_refused() -> None:
    for name in config_data():
        assert not SECRET_NAME.search(name), f"{name} belongs in the Secret"
    for _, container in muster_containers():
        for variable in container.get("env", []):
            assert not SECRET_NAME.search(variable["name"]), variable["name"]
    assert set(secret_data()) <= set(known_variables())
    _, api = next(c for c in muster_containers() if c[1]["command"][1:] == ["api"])
    with pytest.raises(ConfigError, match="MUSTER_ADMIN_TOKEN"):
        load_settings(environment_of(api, secret_data()))


def test_mail_in_listens_behind_port_25_and_refuses_to_start_without_its_secret() -> None:
    mail_in = deployments()["muster-mail-in"]
    (container,) = containers(mail_in)
    assert settings_of(container).mail_in_address == "0.0.0.0:2525"
    service = resources("Service")["muster-mail-in"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(25, "smtp")]
    without = {**secret_data(), "MUSTER_ADMIN_TOKEN": ADMIN_TOKEN}
    with pytest.raises(ConfigError, match="MUSTER_MAIL_IN_SECRET"):
        load_settings(environment_of(container, without))
