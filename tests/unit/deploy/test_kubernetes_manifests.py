"""deploy/kubernetes/ checked offline: every object against the Kubernetes API schemas (the
kubernetes-validate package carries them; strict: an unknown field fails), the KServe InferenceService's
pod fields against core/v1's PodSpec (its CRD schema is not among them), and the facts the manifests
must agree on with each other and with the server (ports, probe commands, the stop sequence's times,
the HPA's metrics as the Prometheus adapter's rules name what the server exports)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from backend.engine.config import EngineConfig
from backend.server.probe import build_parser
from backend.serving.metrics import GAUGES

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
VARIANTS = ("base", "kserve")
# The oldest Kubernetes the manifests are meant for (autoscaling/v2 behaviour, startup probes, sizeLimit
# on memory-backed emptyDir, appProtocol) and the newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# InferenceService v1beta1: the predictor's own fields (ComponentExtensionSpec); every other key of the
# predictor is a PodSpec field, inlined.
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
                           "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
                           "deploymentStrategy"}
KSERVE_MODES = {"Serverless", "RawDeployment", "ModelMesh"}


def render(directory: Path) -> list[dict]:
    """What `kubectl apply -k directory` applies: these kustomizations only list resources (files, or
    directories holding a kustomization), so the objects are the files' documents as they are."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(kustomization) - {"apiVersion", "kind", "resources"}
    assert not extra, f"{directory}/kustomization.yaml: {sorted(extra)} would change the objects; the check reads files"
    objects = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        assert path.is_relative_to(ROOT), f"{entry}: outside deploy/kubernetes"
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def schema_errors(obj: dict, version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{obj['kind']} {obj['metadata'].get('name')}: {str(e).splitlines()[0]} at {list(e.path)}"
    return None


def as_pod(isvc: dict) -> dict:
    """The predictor's PodSpec fields as a core/v1 Pod, for the schema check."""
    spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in KSERVE_COMPONENT_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]}, "spec": spec}


def pod_specs(objects: list[dict]) -> list[dict]:
    return ([d["spec"]["template"]["spec"] for d in by_kind(objects, "Deployment")]
            + [as_pod(i)["spec"] for i in by_kind(objects, "InferenceService")])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_api_schemas(variant, version):
    objects = render(ROOT / variant)
    assert objects
    for obj in objects:
        if obj["kind"] == "InferenceService":
            assert obj["apiVersion"] == "serving.kserve.io/v1beta1"
            unknown = set(obj["spec"]) - {"predictor", "transformer", "explainer"}
            assert not unknown, unknown
            obj = as_pod(obj)
        assert schema_errors(obj, version) is None, schema_errors(obj, version)


def test_the_check_catches_a_wrong_field():
    deployment = copy.deepcopy(by_kind(render(ROOT / "base"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    assert "readinesProbe" in schema_errors(deployment, VERSIONS[0])
    deployment = copy.deepcopy(by_kind(render(ROOT / "base"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "630"  # a string
    assert schema_errors(deployment, VERSIONS[0]) is not None


def test_every_manifest_is_applied_by_a_kustomization():
    applied = set()
    for variant in VARIANTS:
        applied |= {json.dumps(o, sort_keys=True) for o in render(ROOT / variant)}
    for path in ROOT.glob("*/*.yaml"):
        if path.name == "kustomization.yaml" or path.parent.name == "prometheus-adapter":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert json.dumps(doc, sort_keys=True) in applied, f"{path} is in no kustomization"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_replica_is_wired_as_the_server_needs(variant):
    objects = render(ROOT / variant)
    for spec in pod_specs(objects):
        (container,) = spec["containers"]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        assert 8000 in ports.values()
        for probe in ("startupProbe", "livenessProbe"):
            port = container[probe]["httpGet"]["port"]
            assert ports.get(port, port) == 8000, probe
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert container["startupProbe"]["httpGet"]["path"] == "/v2/models/dllm/ready"
        ready = container["readinessProbe"]["exec"]["command"]
        drain = container["lifecycle"]["preStop"]["exec"]["command"]
        for command in (ready, drain):
            assert command[:3] == ["python3", "-m", "backend.server.probe"], command
        assert build_parser().parse_args(ready[3:]).what == "ready"
        drain_args = build_parser().parse_args(drain[3:])
        assert drain_args.what == "drain"
        # The kubelet kills at the grace's end: the drain and tritonserver's own exit timeout fit in it.
        env = {e["name"]: e.get("value") for e in container["env"]}
        exit_timeout = int(env["DLLM_EXIT_TIMEOUT_SECS"])
        assert spec["terminationGracePeriodSeconds"] >= drain_args.settle_s + drain_args.wait_s + exit_timeout
        assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes[mounts["/checkpoints"]]
        engine = volumes[mounts["/models/dllm/1/engine.json"]]["configMap"]["name"]
        (config_map,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == engine]
        settings = json.loads(config_map["data"]["engine.json"])
        EngineConfig.from_dict(settings)  # the engine accepts every key and value
        assert settings["model"].startswith("/checkpoints/")
        claims = {c["metadata"]["name"] for c in by_kind(objects, "PersistentVolumeClaim")}
        assert volumes[mounts["/checkpoints"]]["persistentVolumeClaim"]["claimName"] in claims
    for service in by_kind(objects, "Service"):
        (deployment,) = by_kind(objects, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def adapter_metrics() -> set[str]:
    """The custom-metric names the adapter's rules make of the gauges the server exports."""
    rules = yaml.safe_load((ROOT / "prometheus-adapter" / "rules.yaml").read_text())["rules"]["custom"]
    exported = {name for name, _ in GAUGES.values()}
    out = set()
    for rule in rules:
        selector = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"]).group(1)
        assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])
        for name in exported:
            if re.fullmatch(selector.strip("^$"), name):
                out.add(re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${", "\\g<").replace("}", ">"),
                               name))
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_autoscaler_reads_metrics_the_adapter_serves(variant):
    objects = render(ROOT / variant)
    targets = {o["metadata"]["name"] for o in by_kind(objects, "Deployment")}
    for isvc in by_kind(objects, "InferenceService"):
        targets.add(f"{isvc['metadata']['name']}-predictor")  # the Deployment KServe makes
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in KSERVE_MODES
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
        assert isvc["spec"]["predictor"]["containers"][0]["name"] == "kserve-container"
    served = adapter_metrics()
    assert served == {"dllm_num_requests_running", "dllm_num_requests_waiting"}
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] in targets
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert wanted and wanted <= served, wanted - served
