"""The ThumbnailJob CRD: generated from the models, structural, and enforced by a real API server.

The unit tests check that crds/ is current and that the schema is structural. The cluster tests
apply the committed file to the test control plane and check that it accepts good objects,
applies the defaults, refuses every bad case below with a message a person understands, keeps
spec immutable, stores status unpruned, and feeds `kubectl explain` and `kubectl get`.
The same cases are run through the pydantic model, so that the CEL rules and ThumbnailSpec's
own validation do not drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CRD_FILE, poll, thumbnailjob
from kubecluster import KubeCluster
from kubernetes import client
from pydantic import ValidationError
from smartthumb.operator.kube import crd as crd_module
from smartthumb.operator.kube.resource import (
    GROUP,
    PLURAL,
    VERSION,
    Resources,
    ThumbnailJobSpec,
    ThumbnailJobStatus,
)

REPO = Path(__file__).resolve().parent.parent

IMMUTABLE = "spec is immutable: delete the ThumbnailJob and create it again"

GOOD: dict[str, Any] = {"sources": [{"path": "chapter-1/001.jpg"}, {"path": "chapter-1/002.jpg"}]}


@dataclass(frozen=True)
class Bad:
    """A spec (GOOD updated with `change`) that the API server refuses with `message`.

    `model` is the text ThumbnailJobSpec's own validation refuses it with."""

    id: str
    change: dict[str, Any]
    message: str
    model: str

    @property
    def spec(self) -> dict[str, Any]:
        return {**GOOD, **self.change}


# The one list of bad cases: the cluster test and the model test both run it.
BAD = [
    Bad("unknown-mode", {"mode": "zoom"}, 'spec.mode: Unsupported value: "zoom"',
        "Input should be 'pair', 'crop', 'fit' or 'resize'"),
    Bad("too-wide", {"width": 9000}, "spec.width in body should be less than or equal to 8192",
        "less than or equal to 8192"),
    Bad("zero-width", {"width": 0}, "spec.width in body should be greater than or equal to 1",
        "greater than or equal to 1"),
    Bad("quality-0", {"quality": 0}, "spec.quality in body should be greater than or equal to 1",
        "greater than or equal to 1"),
    Bad("no-sources", {"sources": []}, "spec.sources in body should have at least 1 items",
        "at least 1 item"),
    Bad("dotdot-source", {"sources": [{"path": "a/../../etc/passwd"}]},
        "spec.sources[0].path: Invalid value: \"a/../../etc/passwd\": must not contain '..': "
        "a source stays inside the shared volume", "a source stays inside the shared volume"),
    Bad("dotdot-parts", {"sources": [{"path": "../x.jpg"}, {"path": "a/.."}, {"path": ".."}]},
        "spec.sources[2].path: Invalid value: \"..\": must not contain '..'", "must not contain '..'"),
    Bad("absolute-source", {"sources": [{"path": "/etc/passwd"}]},
        "spec.sources[0].path: Invalid value: \"/etc/passwd\": must be relative to the shared "
        "volume's root", "must be relative to the shared volume's root"),
    Bad("two-kinds-of-source", {"sources": [{"path": "a.jpg", "url": "https://x.example/a.jpg"}]},
        "spec.sources[0]: Invalid value: set exactly one of path, s3 and url",
        "set exactly one of path, s3 and url"),
    Bad("no-kind-of-source", {"sources": [{}]},
        "spec.sources[0]: Invalid value: set exactly one of path, s3 and url",
        "set exactly one of path, s3 and url"),
    Bad("ftp-source", {"sources": [{"url": "ftp://x.example/a.jpg"}]},
        "spec.sources[0].url: Invalid value: \"ftp://x.example/a.jpg\": url must start with "
        "https:// or http://", "url must start with https:// or http://"),
    Bad("bad-bucket", {"sources": [{"s3": {"bucket": "No_Such", "key": "a.jpg"}}]},
        "spec.sources[0].s3.bucket in body should match", "should match pattern"),
    Bad("dotdot-output", {"output": "../elsewhere/x.jpg"},
        "must not contain '..': the output stays inside the shared volume",
        "the output stays inside the shared volume"),
    Bad("absolute-output", {"output": "/tmp/x.jpg"},
        "spec.output: Invalid value: \"/tmp/x.jpg\": must be relative to the shared volume's root",
        "must be relative to the shared volume's root"),
    Bad("bad-memory", {"resources": {"memory": "lots"}},
        'spec.resources.memory: Invalid value: "lots": must be a quantity such as 512Mi',
        "should match pattern"),
    Bad("bad-fallback-memory", {"resources": {"fallbackMemory": "1.5.5Mi"}},
        "spec.resources.fallbackMemory: Invalid value: \"1.5.5Mi\": must be a quantity",
        "should match pattern"),
    Bad("bad-max-memory", {"resources": {"maxMemory": "2 Gi"}},
        "spec.resources.maxMemory: Invalid value: \"2 Gi\": must be a quantity", "should match"),
    Bad("bad-cpu", {"resources": {"cpu": "half"}},
        'spec.resources.cpu: Invalid value: "half": must be a quantity such as 500m',
        "should match pattern"),
    Bad("fallback-above-memory", {"resources": {"memory": "256Mi", "fallbackMemory": "1Gi"}},
        "spec.resources: Invalid value: fallbackMemory must not be larger than memory",
        "fallbackMemory must not be larger than memory"),
    Bad("memory-above-max", {"resources": {"memory": "1Gi", "maxMemory": "512Mi"}},
        "spec.resources: Invalid value: maxMemory must not be smaller than memory",
        "maxMemory must not be smaller than memory"),
    Bad("resize-without-height", {"mode": "resize", "width": 100},
        "mode 'resize' needs both width and height", "mode 'resize' needs both width and height"),
    Bad("fit-without-sizes", {"mode": "fit"}, "mode 'fit' needs width or height",
        "mode 'fit' needs width or height"),
    Bad("crop-without-sizes", {"mode": "crop"},
        "mode 'crop' needs width and height, or one of them and aspect",
        "mode 'crop' needs width and height, or one of them and aspect"),
    Bad("crop-width-without-aspect", {"mode": "crop", "width": 100},
        "mode 'crop' needs both width and height, or aspect with one",
        "mode 'crop' needs both width and height, or aspect with one"),
    Bad("aspect-with-fit", {"mode": "fit", "width": 100, "aspect": "4:3"},
        "aspect applies to mode 'crop' only", "aspect applies to mode 'crop' only"),
    Bad("pair-too-narrow", {"width": 10, "gap": 20},
        "pair canvas is too narrow for two panels and the gap", "pair canvas is too narrow"),
    # Height only: the width is round(225 * 16 / 9) = 400 < 400 + 2.
    Bad("pair-too-short", {"height": 225, "gap": 400},
        "pair canvas is too narrow for two panels and the gap", "pair canvas is too narrow"),
    # round(8192 * 1 / 9999) = 1: the crop would be a strip 1 px high.
    Bad("crop-aspect-degenerates", {"mode": "crop", "width": 8192, "aspect": "9999:1"},
        "crop: the side completed from aspect must come out 16 to 8192 px; give both width "
        "and height, or a less extreme aspect", "(aspect 9999:1 makes 8192x1)"),
    # 16 * 9999 = 159984: was quietly clamped to 8192, which is another aspect.
    Bad("crop-aspect-overflows", {"mode": "crop", "height": 16, "aspect": "9999:1"},
        "crop: the side completed from aspect must come out 16 to 8192 px",
        "(aspect 9999:1 makes 159984x16)"),
    Bad("pair-too-low", {"width": 27}, "pair: the side completed from 16:9 must come out at "
        "least 16 px; give a larger width or height, or both", "(the canvas is 27x15)"),
    Bad("pair-too-thin", {"height": 8}, "pair: the side completed from 16:9 must come out at "
        "least 16 px", "(the canvas is 14x8)"),
    # kubectl asks for strict field validation: refused. Without it the server prunes the
    # field (test_unknown_fields_are_pruned_without_strict_validation).
    Bad("unknown-field", {"colour": "red"}, 'unknown field "spec.colour"',
        "Extra inputs are not permitted"),
]  # fmt: skip

# Edge cases both the API server and the model accept.
GOOD_CASES = {
    "minimal": {},
    "url-and-s3-sources": {"sources": [{"url": "https://images.example.com/a.jpg?sig=1"},
                                       {"s3": {"bucket": "photos", "key": "2026/a.jpg"}}]},
    "pair-just-wide-enough": {"height": 226, "gap": 400},  # round(226 * 16 / 9) = 402
    "pair-width-and-height": {"width": 800, "height": 800},
    "crop-width-and-aspect": {"mode": "crop", "width": 1200, "aspect": "16:9"},
    "crop-both-sizes": {"mode": "crop", "width": 300, "height": 400},
    "crop-aspect-just-tall-enough": {"mode": "crop", "width": 8192, "aspect": "512:1"},  # 16
    "crop-aspect-just-narrow-enough": {"mode": "crop", "height": 16, "aspect": "512:1"},
    "pair-just-high-enough": {"width": 28},  # round(28 * 9 / 16) = 16
    "pair-just-wide-enough-from-height": {"height": 9},  # round(9 * 16 / 9) = 16
    "fit-height-only": {"mode": "fit", "height": 400},
    "resize-both": {"mode": "resize", "width": 8192, "height": 1},
    "dots-in-names": {"sources": [{"path": "..hidden/a..b.jpg"}], "output": "out/x..jpg"},
    # 1G < 1Gi: quantities compare by value, whatever the suffix.
    "memory-mixed-suffixes": {"resources": {"memory": "1Gi", "maxMemory": "1Gi",
                                            "fallbackMemory": "1G"}},
    "everything": {
        "format": "webp", "quality": 90, "grayscale": True, "skipEdges": 0, "gap": 0,
        "timeoutSeconds": 60, "ttlSecondsAfterFinished": 0,
        "webhook": {"url": "https://example.com/hook", "secretRef": {"name": "hook"}},
        "runnerPod": {
            "labels": {"team": "comics"}, "nodeSelector": {"pool": "images"},
            "tolerations": [{"key": "images", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch-low",
        },
    },
}  # fmt: skip

CEL_MESSAGES_COVERED = {IMMUTABLE} | {case.message for case in BAD}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node of an OpenAPI schema, with a readable path."""
    yield path or ".", schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def openapi_schema(definition: dict[str, Any]) -> dict[str, Any]:
    (version,) = definition["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


# --- unit tests: no cluster ----------------------------------------------------------------


def test_committed_crd_is_current() -> None:
    committed = CRD_FILE.read_text() if CRD_FILE.exists() else ""
    assert committed == crd_module.render(), (
        f"{crd_module.OUTPUT} is stale: run `make crds` and commit the result"
    )
    assert yaml.safe_load(committed) == crd_module.crd()


def test_check_flag_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "crd.yaml"
    assert crd_module.main(["--check", "--output", str(target)]) == 1  # missing
    target.write_text(crd_module.render() + "# edited\n")
    assert crd_module.main(["--check", "--output", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"{target} is stale: run `make crds`"
    assert crd_module.main(["--output", str(target)]) == 0
    assert crd_module.main(["--check", "--output", str(target)]) == 0
    assert target.read_text() == crd_module.render()


def test_schema_is_structural() -> None:
    root = openapi_schema(crd_module.crd())
    forbidden = ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "propertyNames",
                 "nullable")  # fmt: skip
    for path, node in walk(root):
        assert "type" in node, f"{path} has no type"
        assert not [k for k in forbidden if k in node], f"{path}: {sorted(node)}"
        assert node.get("additionalProperties", {}) is not False, f"{path}"
        assert "default" not in node or node["default"] is not None, f"{path}: default null"
        for name in node.get("required", []):
            assert name in node["properties"], f"{path} requires unknown {name}"
        if node["type"] == "object" and path not in (".", ".metadata"):
            assert "properties" in node or "additionalProperties" in node, path
    assert json.dumps(root).count("$ref") == 0


def test_schema_keeps_what_the_models_say() -> None:
    spec = openapi_schema(crd_module.crd())["properties"]["spec"]
    props = spec["properties"]
    assert props["mode"]["enum"] == ["pair", "crop", "fit", "resize"]
    assert props["mode"]["default"] == "pair"
    assert props["mode"]["description"] == ThumbnailJobSpec.model_fields["mode"].description
    assert (props["width"]["minimum"], props["width"]["maximum"]) == (1, 8192)
    assert props["sources"]["maxItems"] == 200
    assert "required" not in props["sources"]["items"]  # one of path, s3, url (a CEL rule)
    # Class docstrings describe object-typed fields that have no description of their own.
    assert props["resources"]["description"].startswith("Memory and CPU of the runner pods.")
    assert props["resources"]["default"] == {"memory": "512Mi", "fallbackMemory": "256Mi",
                                             "cpu": "500m"}  # fmt: skip
    assert props["runnerPod"]["properties"]["labels"]["additionalProperties"] == {
        "type": "string", "maxLength": 63,
    }  # fmt: skip
    assert props["runnerPod"]["properties"]["labels"]["maxProperties"] == 32
    assert spec["required"] == ["sources"]
    status = openapi_schema(crd_module.crd())["properties"]["status"]["properties"]
    assert status["conditions"]["items"]["properties"]["lastTransitionTime"] == {
        "description": "When status last changed.", "type": "string", "format": "date-time",
    }  # fmt: skip


def test_every_cel_rule_has_a_bad_case() -> None:
    messages = {
        rule["message"]
        for _, node in walk(openapi_schema(crd_module.crd()))
        for rule in node.get("x-kubernetes-validations", [])
    }
    uncovered = {m for m in messages if not any(m in covered for covered in CEL_MESSAGES_COVERED)}
    assert not uncovered, f"add a Bad case for each of these CEL rules: {uncovered}"


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_model_refuses_what_the_api_server_refuses(case: Bad) -> None:
    with pytest.raises(ValidationError) as error:
        ThumbnailJobSpec.model_validate(case.spec)
    assert case.model in str(error.value)


@pytest.mark.parametrize("change", GOOD_CASES.values(), ids=GOOD_CASES.keys())
def test_model_accepts_the_good_cases(change: dict[str, Any]) -> None:
    ThumbnailJobSpec.model_validate({**GOOD, **change})


# --- against the real API server -------------------------------------------------------------


def kubectl_apply(cluster: KubeCluster, namespace: str, obj: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )


@pytest.mark.cluster
@pytest.mark.parametrize("change", GOOD_CASES.values(), ids=GOOD_CASES.keys())
def test_good_thumbnailjob_is_accepted_with_the_models_defaults(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, change: dict[str, Any]
) -> None:
    spec = {**GOOD, **change}
    out = kubectl_apply(kube_cluster, namespace, thumbnailjob("good", spec))
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)["spec"]
    # The API server's defaults are the model's: both read the same spec.
    assert ThumbnailJobSpec.model_validate(stored) == ThumbnailJobSpec.model_validate(spec)
    if not change:
        assert stored["mode"] == "pair"
        assert stored["resources"] == Resources().model_dump(by_alias=True, exclude_none=True)
        assert stored["resources"]["memory"] == "512Mi"
        assert (stored["quality"], stored["timeoutSeconds"]) == (82, 600)


@pytest.mark.cluster
@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_api_server_refuses_bad_thumbnailjobs_saying_why(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, case: Bad
) -> None:
    out = kubectl_apply(kube_cluster, namespace, thumbnailjob(case.id, case.spec))
    assert out.returncode != 0, f"accepted: {out.stdout}"
    assert case.message in out.stderr
    # Only the refusal's own messages: no CEL evaluation errors leak through.
    assert "evaluating rule" not in out.stderr and "regular expression" not in out.stderr


@pytest.mark.cluster
def test_unknown_fields_are_pruned_without_strict_validation(
    api: client.ApiClient, installed_crd: str, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    body = thumbnailjob("pruned", {**GOOD, "colour": "red"})
    body["spec"]["sources"][0]["size"] = 3
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "colour" not in created["spec"]
    assert created["spec"]["sources"][0] == {"path": GOOD["sources"][0]["path"]}


@pytest.mark.cluster
def test_spec_is_immutable_but_labels_and_status_can_change(
    kube_cluster: KubeCluster, api: client.ApiClient, installed_crd: str, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    name = f"tj-{uuid.uuid4().hex[:6]}"
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, thumbnailjob(name, GOOD)
    )

    refused = kube_cluster.kubectl(
        "patch", "tj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"width":300}}',
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert IMMUTABLE in refused.stderr

    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"labels": {"team": "comics"}}}
    )
    assert labelled["metadata"]["labels"] == {"team": "comics"}

    status = written_status()
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )
    read = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert patched["status"] == read["status"]
    for key, value in status.items():  # nothing the operator writes is pruned
        assert read["status"][key] == value, key
    # The defaults (interruptions: 0, conditions' message "") come on top; the operator can
    # parse what it reads back with the same model.
    assert read["status"]["interruptions"] == 0
    parsed = ThumbnailJobStatus.model_validate(read["status"])
    assert parsed.attempts[-1].attempt == 2
    assert read["metadata"]["generation"] == 1  # labels and status leave the spec alone


def written_status() -> dict[str, Any]:
    """A status as the operator writes it after an OOM kill and a fallback run."""
    t0, t1, t2 = "2025-01-01T10:00:00Z", "2025-01-01T10:00:30Z", "2025-01-01T10:01:00Z"
    return {
        "phase": "Running",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Admitted", "status": "True", "reason": "Admitted",
             "message": "admitted", "lastTransitionTime": t0, "observedGeneration": 1},
            {"type": "FallbackUsed", "status": "True", "reason": "OutOfMemory",
             "message": "the main runner was OOMKilled at 2Gi", "lastTransitionTime": t1},
        ],
        "attempts": [
            {"attempt": 1, "jobName": "tj-1", "runner": "main", "memory": "512Mi",
             "startedAt": t0, "finishedAt": t1, "outcome": "OOMKilled",
             "disruptedPods": ["tj-1-abcde"]},
            {"attempt": 2, "jobName": "tj-2", "runner": "fallback", "memory": "256Mi",
             "startedAt": t2},
        ],
        "fallbackReason": "OOMKilled with 512Mi",
        "webhook": {"attempts": 1, "delivered": False, "lastStatusCode": 503,
                    "nextAttemptAt": t2},
        "startedAt": t0,
        "expiresAt": "2025-01-01T11:01:00Z",
    }  # fmt: skip


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("field", "description"),
    [
        ("thumbnailjob.spec.mode", ThumbnailJobSpec.model_fields["mode"].description),
        ("tj.spec.resources.maxMemory", Resources.model_fields["max_memory"].description),
    ],
)
def test_kubectl_explain_prints_the_models_descriptions(
    kube_cluster: KubeCluster, installed_crd: str, field: str, description: str
) -> None:
    def explained() -> str:
        out = kube_cluster.kubectl("explain", field, check=False)
        return " ".join(out.stdout.split()) if out.returncode == 0 else ""

    # The OpenAPI document of a new CRD is published a moment after it is served.
    text = poll(f"kubectl explain {field}", explained, timeout=60)
    assert " ".join(description.split()) in text


@pytest.mark.cluster
def test_kubectl_get_shows_the_printer_columns(
    kube_cluster: KubeCluster, api: client.ApiClient, installed_crd: str, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, thumbnailjob("shown", GOOD)
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "shown", {"status": written_status()}
    )
    out = kube_cluster.kubectl("get", "tj", "-n", namespace)
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "MODE", "ATTEMPTS", "FALLBACK", "AGE"]
    assert row.split()[:5] == ["shown", "Running", "pair", "2", "True"]
    # The category finds it too.
    assert "shown" in kube_cluster.kubectl("get", "smartthumb", "-n", namespace).stdout
