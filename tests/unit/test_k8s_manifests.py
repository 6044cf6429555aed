"""deploy/k8s against the Kubernetes API types and against the CLI.

Each core object is decoded strictly into the official client's models (``kubernetes``
package, generated from the API's OpenAPI spec): an unknown field, a value of the wrong
type or a missing required field fails, as ``kubectl apply --validate=strict`` would. The
KEDA ScaledObject (a CRD the client does not carry) is checked field by field against the
ScaledObject spec and the kafka scaler's parameters. Then the manifests are checked
against the CLI: the commands parse, every STREAMINFER_* name is a setting, the probes hit
the worker's paths on its metrics port, and the autoscaler reads the group and topics the
workers use, capped at the partitions the topics Job makes, with lag thresholds derived
from the throughput the bench measured.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes.client.models as models
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CORE_MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Secret"): "V1Secret", ("v1", "Service"): "V1Service",
               ("batch/v1", "Job"): "V1Job", ("apps/v1", "Deployment"): "V1Deployment"}
# environment the CLI reads besides the settings
CLI_ENV = {"STREAMINFER_LOG_FORMAT"}


class Invalid(AssertionError):
    pass


def strict(value: Any, type_name: str, path: str) -> None:
    """``value`` (decoded YAML) is a valid ``type_name`` of the client's models, no field unknown."""
    if m := re.fullmatch(r"List\[(.+)\]", type_name):
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            strict(item, m.group(1), f"{path}[{i}]")
        return
    if m := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected a map, got {value!r}")
        for key, item in value.items():
            strict(item, m.group(1), f"{path}.{key}")
        return
    scalar: dict[str, type | tuple[type, ...]] = {
        "str": str, "int": int, "bool": bool, "float": (int, float), "bytes": str, "datetime": str}
    if type_name in scalar:
        if not isinstance(value, scalar[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise Invalid(f"{path}: expected {type_name}, got {value!r}")
        return
    if type_name == "object":  # IntOrString, Quantity, free-form
        return
    cls = getattr(models, type_name)
    if not isinstance(value, dict):
        raise Invalid(f"{path}: expected a {type_name} map, got {value!r}")
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            raise Invalid(f"{path}: unknown field {key!r} in {type_name}")
        strict(item, cls.openapi_types[by_json[key]], f"{path}.{key}")
    # required fields: the generated constructors refuse None for them
    try:
        cls(**{attr: (value[json_name] if json_name in value else None)
               for json_name, attr in by_json.items()})
    except ValueError as exc:
        raise Invalid(f"{path}: {exc}") from None


def documents(kustomization: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists (its resources, recursively), patches applied."""
    spec = yaml.safe_load(kustomization.read_text())
    docs: list[dict[str, Any]] = []
    for resource in spec["resources"]:
        target = (kustomization.parent / resource).resolve()
        if target.is_dir():
            docs += documents(target / "kustomization.yaml")
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    for patch in spec.get("patches", []):
        matched = [d for d in docs if d["kind"] == patch["target"]["kind"]
                   and d["metadata"]["name"] == patch["target"]["name"]]
        assert len(matched) == 1, patch["target"]
        for op in yaml.safe_load(patch["patch"]):
            json_patch_add(matched[0], op)
    return docs


def json_patch_add(doc: dict[str, Any], op: dict[str, Any]) -> None:
    """RFC 6902 ``add`` (the only operation the overlays use)."""
    assert op["op"] == "add", op
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
    else:
        node[last] = copy.deepcopy(op["value"])


BASE = documents(K8S / "kustomization.yaml")
GPU = documents(K8S / "gpu" / "kustomization.yaml")


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("doc", [d for d in [*BASE, one(GPU, "Deployment")] if d["kind"] != "ScaledObject"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_object_decodes_strictly_into_the_kubernetes_api_types(doc: dict[str, Any]) -> None:
    strict(doc, CORE_MODELS[(doc["apiVersion"], doc["kind"])], doc["kind"])


def test_the_strict_decoder_refuses_what_the_api_would() -> None:
    deployment = one(BASE, "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []  # a misspelt field
    with pytest.raises(Invalid, match="unknown field 'envfrom'"):
        strict(broken, "V1Deployment", "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "2"
    with pytest.raises(Invalid, match="expected int"):
        strict(broken, "V1Deployment", "Deployment")
    broken = copy.deepcopy(deployment)
    del broken["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(Invalid, match="name"):
        strict(broken, "V1Deployment", "Deployment")


SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "fallback", "triggers"}
TRIGGER = {"type", "metadata", "name", "authenticationRef", "metricType", "useCachedMetrics"}
KAFKA_METADATA = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                  "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
                  "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls", "unsafeSsl"}


def test_the_scaled_object_fits_keda_and_the_workers() -> None:
    scaled = one(BASE, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    deployment, config = one(BASE, "Deployment"), one(BASE, "ConfigMap")["data"]
    assert spec["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    topics = config["STREAMINFER_INPUT_TOPICS"].split(",")
    assert sorted(t["metadata"]["topic"] for t in spec["triggers"]) == sorted(topics)  # each topic set explicitly
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER and trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert set(meta) <= KAFKA_METADATA, set(meta) - KAFKA_METADATA
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
        assert meta["consumerGroup"] == config["STREAMINFER_GROUP_ID"]
        assert meta["bootstrapServers"] == config["STREAMINFER_KAFKA_BOOTSTRAP"]
        assert meta["offsetResetPolicy"] == WorkerSettings.model_fields["auto_offset_reset"].default
    job = one(BASE, "Job")["spec"]["template"]["spec"]["containers"][0]["command"]
    partitions = int(job[job.index("--partitions") + 1])
    assert spec["maxReplicaCount"] == partitions and 1 <= spec["minReplicaCount"] <= partitions


def test_lag_thresholds_are_the_measured_worker_rate_times_the_drain_time() -> None:
    scaled = one(BASE, "ScaledObject")
    drain_s = float(scaled["metadata"]["annotations"]["streaminfer/drain-seconds"])
    bench = json.loads((ROOT / "docs" / "bench" / "bench.json").read_text())
    kind_of = {"streaminfer-transactions": "transaction", "streaminfer-frames": "frame"}
    for trigger in scaled["spec"]["triggers"]:
        runs = bench["kinds"][kind_of[trigger["metadata"]["topic"]]]["throughput"]["spread"]["worker, defaults"]
        expected = runs["median"] * drain_s
        assert int(trigger["metadata"]["lagThreshold"]) == pytest.approx(expected, rel=0.01), trigger


def test_commands_and_environment_agree_with_the_cli() -> None:
    settings = {f"STREAMINFER_{name.upper()}" for name in WorkerSettings.model_fields}
    parser = build_parser()
    for doc in BASE + GPU:
        if doc["kind"] in ("ConfigMap", "Secret"):
            names = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            assert names <= settings | CLI_ENV, names - settings - CLI_ENV
            continue
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = container["command"]
            assert command[0] == "streaminfer"
            parser.parse_args(command[1:])  # exits (SystemExit) on a flag the CLI does not have
            for env in container.get("env", []):
                assert env["name"] in settings, env["name"]
            refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
            assert refs == {"streaminfer", "streaminfer-kafka"}


def test_probes_and_service_hit_the_worker_s_metrics_port_and_paths() -> None:
    port = int(one(BASE, "ConfigMap")["data"]["STREAMINFER_METRICS_PORT"])
    container = one(BASE, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    [named] = [p for p in container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert (probes["livenessProbe"]["path"], probes["readinessProbe"]["path"]) == ("/healthz", "/readyz")
    service = one(BASE, "Service")["spec"]
    assert service["ports"][0]["targetPort"] == "metrics" and service["ports"][0]["port"] == port
    labels = one(BASE, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    from pipeline.metrics import MetricsServer

    class Ready:
        def ready(self) -> bool:
            return True

    served = MetricsServer(Ready(), port=0)  # type: ignore[arg-type]  # only the probe routes are asked
    for probe in probes.values():  # each path the manifests probe is a route the worker serves
        assert served._answer(probe["path"])[0] == "200 OK", probe
    assert served._answer("/nowhere")[0].startswith("404")


def test_the_gpu_overlay_asks_for_a_gpu_and_runs_on_cuda() -> None:
    container = one(GPU, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "STREAMINFER_DEVICE", "value": "cuda"} in container["env"]
    assert "env" not in one(BASE, "Deployment")["spec"]["template"]["spec"]["containers"][0]  # base untouched
