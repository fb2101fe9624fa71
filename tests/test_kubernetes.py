"""The Kubernetes manifests (.deploy/kubernetes): every overlay renders with kustomize, validates
against the Kubernetes API schemas (kubernetes-validate), and agrees with the image and the server.

Rendering needs `kubectl` (its built-in kustomize) or `kustomize` on PATH; without either these
tests skip. No cluster is needed.
"""

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from app.config import Settings
from tests.test_deploy import arguments, image_env

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / ".deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu", "monitoring")
# The oldest API the manifests use (topologySpreadConstraints' matchLabelKeys: 1.27, on by
# default from 1.27) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
LABELS = {"app.kubernetes.io/name": "layerlab"}


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def render(overlay: str) -> tuple[dict, ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is on PATH (install kubectl >= 1.27, which embeds kustomize 5)")
    result = subprocess.run([*command, str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(overlay: str, kind: str) -> dict:
    (doc,) = [doc for doc in render(overlay) if doc["kind"] == kind]
    return doc


def container(overlay: str) -> dict:
    (spec,) = one(overlay, "Deployment")["spec"]["template"]["spec"]["containers"]
    return spec


def config(overlay: str) -> dict[str, str]:
    return one(overlay, "ConfigMap")["data"]


def seconds(overlay: str, name: str) -> float:
    return float(config(overlay)[name])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay, version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = []
    for doc in render(overlay):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in Kubernetes itself (checked below)
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any unknown or wrong field
        checked.append(doc["kind"])
    assert sorted(checked) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_is_locked_down(overlay):
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The image's user, by number (runAsNonRoot cannot check a name).
    assert str(security["runAsUser"]) == arguments("USER")[-1].split(":")[0]
    own = container(overlay)["securityContext"]
    assert own["readOnlyRootFilesystem"] is True and own["allowPrivilegeEscalation"] is False
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    # A Service named layerlab would otherwise inject LAYERLAB_PORT=tcp://..., clashing with the setting.
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_folders_are_empty_dirs(overlay):
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container(overlay)["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container(overlay)["env"]}
    assert "emptyDir" in mounts["/tmp"]
    assert "emptyDir" in mounts[env["PROMETHEUS_MULTIPROC_DIR"]]  # the workers' shared metrics files
    assert all("sizeLimit" in volume["emptyDir"] for volume in volumes.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_ports_match_the_server(overlay):
    spec = container(overlay)
    (port,) = spec["ports"]
    assert port["name"] == "http" and str(port["containerPort"]) == arguments("EXPOSE")[0] == image_env()["LAYERLAB_PORT"]
    assert config(overlay)["LAYERLAB_PORT"] == str(port["containerPort"]) and config(overlay)["LAYERLAB_HOST"] == "0.0.0.0"
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = spec["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # torch's import on a cold node
    annotations = one(overlay, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_whole_drain(overlay):
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    command = container(overlay)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    drain = seconds(overlay, "LAYERLAB_DRAIN_S")
    assert pause > 0 and drain > 0
    # The readiness probe sees the drain's 503 well within it.
    probe = container(overlay)["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < drain
    # After the drain, a request in flight may still wait for a compute slot and then compute.
    in_flight = seconds(overlay, "LAYERLAB_COMPUTE_QUEUE_TIMEOUT_S") + seconds(overlay, "LAYERLAB_COMPUTE_TIMEOUT_S")
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + in_flight


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_map_holds_valid_settings(overlay, monkeypatch):
    data = config(overlay)
    for name, value in data.items():
        assert name.startswith("LAYERLAB_") and name.removeprefix("LAYERLAB_").lower() in Settings.model_fields, name
        monkeypatch.setenv(name, value)
    settings = Settings()  # parses every value as the server would
    cpus = container(overlay)["resources"]["requests"]["cpu"]
    # torch's threads are set, not derived from the node's CPU count (which the pod does not own).
    assert settings.torch_threads > 0 and settings.workers * settings.torch_threads <= float(cpus)
    # The kubelet's probes and Prometheus carry no API key.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in settings.auth_exempt_paths
    assert set(Settings.model_fields["auth_exempt_paths"].get_default(call_default_factory=True)) \
        <= set(settings.auth_exempt_paths)  # the docs stay open as they are by default
    env = {item["name"]: item for item in container(overlay)["env"]}
    assert env["LAYERLAB_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "layerlab-api-keys"
    (source,) = container(overlay)["envFrom"]
    assert source["configMapRef"]["name"] == one(overlay, "ConfigMap")["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_objects_select_the_pods(overlay):
    deployment = one(overlay, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert LABELS.items() <= pod_labels.items()
    selectors = [deployment["spec"]["selector"]["matchLabels"], one(overlay, "Service")["spec"]["selector"],
                 one(overlay, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    selectors += [spread["labelSelector"]["matchLabels"]
                  for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    keys = {spread["topologyKey"] for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    (port,) = one(overlay, "Service")["spec"]["ports"]
    assert port["targetPort"] == "http"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_autoscaler_owns_the_replica_count(overlay):
    deployment, hpa = one(overlay, "Deployment"), one(overlay, "HorizontalPodAutoscaler")
    assert "replicas" not in deployment["spec"]  # an apply would reset what the autoscaler chose
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container(overlay)["resources"]["requests"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    assert hpa["spec"]["minReplicas"] >= 2  # one pod down (PDB, rollout, crash) leaves one serving
    assert one(overlay, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_memory_is_sized_from_the_measured_worker():
    """The figures in deployment.yaml's comment (tests/benchmarks/worker_memory.py): 259 MiB idle,
    828 MiB peak per worker process serving the notebook's Conv2d as nested JSON."""
    mib = {"Mi": 1, "Gi": 1024}
    resources = container("cpu")["resources"]
    request, limit = (int(value[:-2]) * mib[value[-2:]] for value in
                      (resources["requests"]["memory"], resources["limits"]["memory"]))
    workers = int(config("cpu")["LAYERLAB_WORKERS"])
    assert request >= workers * 259 + 422 - 259  # every worker idle, one serving a notebook Conv2d
    assert limit >= workers * 828  # every worker at the nested-JSON peak
    metrics_dir = next(v for v in one("cpu", "Deployment")["spec"]["template"]["spec"]["volumes"]
                       if v["name"] == "metrics")
    assert metrics_dir["emptyDir"]["medium"] == "Memory"  # counts against the limit: keep it small
    assert int(metrics_dir["emptyDir"]["sizeLimit"][:-2]) <= 64


def test_the_gpu_overlay_asks_for_a_gpu():
    spec = container("gpu")
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    tolerations = one("gpu", "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert config("gpu")["LAYERLAB_WORKERS"] == "1"  # one CUDA context per GPU
    assert spec["image"].startswith("layerlab-cuda:")
    assert "nvidia.com/gpu" not in container("cpu")["resources"]["limits"]


def test_the_service_monitor_scrapes_the_service():
    (monitor,) = [doc for doc in render("monitoring") if doc["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one("monitoring", "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not [doc for doc in render("cpu") if doc["kind"] == "ServiceMonitor"]  # needs the operator's CRD


def test_each_overlay_names_its_apply_command():
    """Each overlay's kustomization names the command that applies it."""
    for overlay in ("cpu", "gpu", "monitoring"):
        text = (KUBERNETES / "overlays" / overlay / "kustomization.yaml").read_text()
        assert f"kubectl apply -k .deploy/kubernetes/overlays/{overlay}" in text
    assert os.path.isfile(KUBERNETES / "base" / "layerlab.env")
    assert re.search(r"^LAYERLAB_DRAIN_S=\d+$", (KUBERNETES / "base" / "layerlab.env").read_text(), flags=re.M)
