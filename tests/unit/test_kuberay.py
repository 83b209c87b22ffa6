"""infra/kuberay-raycluster.yaml checked structurally (no Kubernetes here): a CPU head that
takes no work, a GPU worker group, the Ray version we install, and the settings every pod
needs."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _cluster() -> dict:
    return yaml.safe_load((ROOT / "infra" / "kuberay-raycluster.yaml").read_text())


def test_head_is_cpu_only_and_takes_no_work() -> None:
    doc = _cluster()
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["spec"]["rayVersion"] == importlib.metadata.version("ray")
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["client"] == 10001 and ports["gcs"] == 6379  # FLYWHEEL_RAY_ADDRESS targets


def test_gpu_worker_group_declares_its_gpus() -> None:
    (group,) = _cluster()["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    params = group["rayStartParams"]
    (container,) = group["template"]["spec"]["containers"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert params["num-gpus"] == gpus == container["resources"]["requests"]["nvidia.com/gpu"]
    # KubeRay passes `resources` to `ray start --resources` as a quoted JSON string.
    assert json.loads(json.loads(params["resources"])) == {"flywheel_gpu_node": 1}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts


def test_every_pod_gets_the_flywheel_settings_and_a_built_image() -> None:
    spec = _cluster()["spec"]
    pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    images = {"dataflywheel:cpu": "Dockerfile.cpu", "dataflywheel:gpu": "Dockerfile.gpu"}
    for pod in pods:
        (container,) = pod["template"]["spec"]["containers"]
        assert {"secretRef": {"name": "dataflywheel-env"}} in container["envFrom"]
        assert (ROOT / "infra" / images[container["image"]]).is_file()
