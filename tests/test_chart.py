"""The Helm chart charts/smartthumb, statically: lint, render, schema, RBAC, CRD staleness.

Each values set is rendered once (`helm template`) and shared. The cluster tests send every
rendered object to the real test API server as a server-side dry run; `helm install` onto the
real node is tested elsewhere.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubecluster import KubeCluster
from kubecluster import testbin_dir as _testbin_dir
from smartthumb.operator.kube import crd as crd_module
from smartthumb.operator.kube.settings import KubernetesBackendSettings, OperatorSettings

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "smartthumb"
HELM = _testbin_dir() / "helm"
RELEASE = "st"
NAMESPACE = "smartthumb"

S3 = {"storage.type": "s3", "storage.s3.bucket": "thumbs",
      "storage.s3.endpoint": "http://minio.storage.svc:9000",
      "storage.s3.credentials.existingSecret": "s3-credentials",
      "sources.allowPrivate": "{10.0.0.0/8}"}  # fmt: skip
VALUES: dict[str, dict[str, str]] = {
    "defaults": {},
    "s3": S3,
    "replicas-2": {"operator.replicas": "2"},
    "replicas-2-all-namespaces": {"operator.replicas": "2", "operator.watchAllNamespaces": "true"},
    "optional-on": {**S3, "metrics.serviceMonitor.enabled": "true",
                    "api.autoscaling.enabled": "true", "api.podDisruptionBudget.enabled": "true",
                    "networkPolicy.enabled": "true", "webhooks.existingSecret": "hooks",
                    "api.tokens.existingSecret": "api-tokens"},
    "anonymous": {"api.allowAnonymous": "true"},
}  # fmt: skip

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"no helm at {HELM} (make testbin)")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check,
                          timeout=60)  # fmt: skip


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@functools.cache
def render(name: str, namespace: str = NAMESPACE) -> tuple[dict[str, Any], ...]:
    """The objects of one values set, rendered once."""
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace,
               *set_args(VALUES[name]))  # fmt: skip
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]  # fmt: skip


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = find(objects, kind, name)
    return found


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- lint, render ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "s3", "replicas-2"])
def test_helm_lint_passes(name: str) -> None:
    out = helm("lint", str(CHART), "--strict", *set_args(VALUES[name]), check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", VALUES)
def test_renders(name: str) -> None:
    kinds = {o["kind"] for o in render(name)}
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "Role",
            "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= kinds  # fmt: skip
    assert ("PersistentVolumeClaim" in kinds) == ("storage.type" not in VALUES[name])


def test_optional_objects_are_off_by_default_and_on_when_asked() -> None:
    optional = {"ServiceMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                "NetworkPolicy"}  # fmt: skip
    assert not optional & {o["kind"] for o in render("defaults")}
    assert optional <= {o["kind"] for o in render("optional-on")}
    assert not find(render("defaults"), "KopfPeering")


def test_the_release_owns_the_operators_lease() -> None:
    objects = render("defaults")
    (lease,) = find(objects, "Lease")
    env = {e["name"]: e for e in
           one(objects, "Deployment", f"{RELEASE}-smartthumb-operator")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}  # fmt: skip
    assert lease["metadata"]["name"] == env["SMARTTHUMB_LEASE_NAME"]["value"]
    # The operator's own namespace: the release's.
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert env["SMARTTHUMB_LEASE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }


def test_crd_gate_and_keep() -> None:
    (crd,) = find(render("defaults"), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    out = helm("template", RELEASE, str(CHART), "--set", "crds.keep=false")
    (crd,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == crd["kind"]]
    assert "annotations" not in crd["metadata"]
    out = helm("template", RELEASE, str(CHART), "--set", "crds.enabled=false")
    assert "kind: CustomResourceDefinition" not in out.stdout


# --- the CRD is the generated one -----------------------------------------------------------


def chart_crd_module() -> Any:
    spec = importlib.util.spec_from_file_location("chart_crd", REPO / "hack" / "chart_crd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_crd_is_current() -> None:
    generator = chart_crd_module()
    committed = generator.OUTPUT.read_text() if generator.OUTPUT.exists() else ""
    assert committed == generator.render(), (
        f"{generator.OUTPUT.relative_to(REPO)} is stale: run `make crds` and commit the result"
    )


def test_rendered_crd_is_the_models_crd() -> None:
    (rendered,) = find(render("defaults"), "CustomResourceDefinition")
    expected = crd_module.crd()
    assert rendered["spec"] == expected["spec"]
    assert rendered["metadata"]["name"] == expected["metadata"]["name"]
    assert rendered["metadata"]["labels"]["app.kubernetes.io/name"] == "smartthumb"


def test_check_flag_reports_a_stale_chart_crd(tmp_path: Path) -> None:
    generator = chart_crd_module()
    target = tmp_path / "crd.yaml"
    assert generator.main(["--check", "--output", str(target)]) == 1
    assert generator.main(["--output", str(target)]) == 0
    assert generator.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text().replace("ThumbnailJob", "ThumbJob", 1))
    assert generator.main(["--check", "--output", str(target)]) == 1


# --- values.schema.json ----------------------------------------------------------------------

BAD_VALUES = [
    ({"image.pullPolicy": "Sometimes"},
     "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ({"storage.type": "nfs"}, "at '/storage/type': value must be one of 'volume', 's3'"),
    ({"operator.replicas": "0"}, "at '/operator/replicas': minimum: got 0, want 1"),
    ({"operator.maxRunning": "0"}, "at '/operator/maxRunning': minimum: got 0, want 1"),
    ({"operator.colour": "red"}, "additional properties 'colour' not allowed"),
    ({"colour": "red"}, "additional properties 'colour' not allowed"),
    ({"image.tag": "latest"}, "at '/image/tag': 'not' failed"),
    ({"storage.volume.accessMode": "ReadWriteOncePod"}, "at '/storage/volume/accessMode'"),
    ({"storage.volume.size": "lots"}, "at '/storage/volume/size'"),
    ({"api.port": "70000"}, "at '/api/port': maximum: got 70,000, want 65,535"),
    ({"runner.fallbackImage": "heavy"}, "at '/runner/fallbackImage': value must be one of"),
]  # fmt: skip
# What the schema cannot see: the templates' own checks.
BAD_COMBINATIONS = [
    ({"storage.type": "s3"}, "storage.type s3 needs storage.s3.bucket"),
    ({"api.namespace": "elsewhere"},
     "api.namespace elsewhere is not among the operator's namespaces"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "message"),
    BAD_VALUES + BAD_COMBINATIONS,
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_bad_values_are_refused_saying_why(values: dict[str, str], message: str) -> None:
    out = helm("template", RELEASE, str(CHART), *set_args(values), check=False)
    assert out.returncode != 0, "accepted"
    assert message in out.stderr, out.stderr


# --- the environment is the settings' --------------------------------------------------------


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, model: Any) -> Any:
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
        elif key.startswith("SMARTTHUMB_S3_") or key == "SMARTTHUMB_API_TOKENS":  # secretKeyRef
            monkeypatch.setenv(key, "from-a-secret")
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    return model()


@pytest.mark.parametrize("name", VALUES)
def test_operator_env_is_operator_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(one(render(name), "Deployment", f"{RELEASE}-smartthumb-operator"))
    fields = {f"SMARTTHUMB_{field.upper()}" for field in OperatorSettings.model_fields}
    assert not {k for k in env if k.startswith("SMARTTHUMB_")} - fields
    settings = settings_from(env, monkeypatch, OperatorSettings)
    assert settings.lease_namespace == NAMESPACE
    assert settings.runner_image == "smartthumb-runner:0.1.0"
    assert settings.fallback_image == "smartthumb-operator:0.1.0"
    assert settings.max_pixels == 50_000_000  # not 5e+07
    if "storage.type" in VALUES[name]:
        assert (settings.storage, settings.s3_bucket) == ("s3", "thumbs")
        assert settings.s3_access_key_id is not None
    else:
        assert settings.volume_claim == f"{RELEASE}-smartthumb-data"
    all_namespaces = VALUES[name].get("operator.watchAllNamespaces") == "true"
    assert settings.namespaces == ([] if all_namespaces else [NAMESPACE])
    assert (settings.peering is not None) == ("operator.replicas" in VALUES[name])


@pytest.mark.parametrize("name", VALUES)
def test_api_env_is_api_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from smartthumb.api.settings import ApiSettings

    env = env_of(one(render(name), "Deployment", f"{RELEASE}-smartthumb-api"))
    models = (ApiSettings, KubernetesBackendSettings)
    fields = {f"SMARTTHUMB_{f.upper()}" for model in models for f in model.model_fields}
    fields |= {
        "SMARTTHUMB_MAX_PIXELS",
        "SMARTTHUMB_MAX_SOURCE_BYTES",
        "SMARTTHUMB_ALLOWED_SOURCES",
        "SMARTTHUMB_SOURCE_TIMEOUT_S",
        "SMARTTHUMB_ALLOW_PRIVATE_SOURCES",
    }  # Limits
    assert not {k for k in env if k.startswith("SMARTTHUMB_")} - fields
    api = settings_from(env, monkeypatch, ApiSettings)
    backend = KubernetesBackendSettings()
    assert (api.backend.value, api.host, api.port) == ("kubernetes", "0.0.0.0", 8080)
    assert backend.namespace == NAMESPACE
    assert backend.storage == ("s3" if "storage.type" in VALUES[name] else "volume")


def test_the_api_needs_a_token_unless_anonymous_is_asked_for() -> None:
    """Secure by default: a random token in a Secret of the release (or the user's Secret);
    only api.allowAnonymous serves everyone, and says so to the API."""
    secret = one(render("defaults"), "Secret", f"{RELEASE}-smartthumb-api-tokens")
    token = base64.b64decode(secret["data"]["tokens"]).decode()
    assert len(token) == 40 and token.isalnum()
    assert (
        base64.b64decode(
            one(render("defaults", "other"), "Secret", f"{RELEASE}-smartthumb-api-tokens")["data"][
                "tokens"
            ]
        ).decode()
        != token
    ), "a fresh install gets its own token"

    def token_ref(name: str) -> Any:
        return env_of(one(render(name), "Deployment", f"{RELEASE}-smartthumb-api")).get(
            "SMARTTHUMB_API_TOKENS"
        )

    assert token_ref("defaults") == {
        "secretKeyRef": {"name": f"{RELEASE}-smartthumb-api-tokens", "key": "tokens"}
    }
    assert token_ref("optional-on") == {"secretKeyRef": {"name": "api-tokens", "key": "tokens"}}
    assert not find(render("optional-on"), "Secret", f"{RELEASE}-smartthumb-api-tokens")
    anonymous = env_of(one(render("anonymous"), "Deployment", f"{RELEASE}-smartthumb-api"))
    assert anonymous["SMARTTHUMB_ALLOW_ANONYMOUS"] == "true"
    assert "SMARTTHUMB_API_TOKENS" not in anonymous
    assert not find(render("anonymous"), "Secret")
    (test_pod,) = [o for o in render("defaults") if o["kind"] == "Pod"]
    (container,) = test_pod["spec"]["containers"]
    assert container["env"][0]["valueFrom"] == token_ref("defaults"), "helm test sends the token"


def test_peering_with_two_replicas() -> None:
    objects = render("replicas-2")
    (container,) = one(objects, "Deployment", f"{RELEASE}-smartthumb-operator")["spec"][
        "template"]["spec"]["containers"]  # fmt: skip
    # No fixed priority: each replica draws its own (equal priorities pause kopf).
    env = {item["name"] for item in container["env"]}
    assert "SMARTTHUMB_PEERING" in env and "SMARTTHUMB_PRIORITY" not in env
    (peering,) = find(objects, "KopfPeering")
    assert peering["metadata"] == {**peering["metadata"], "name": f"{RELEASE}-smartthumb",
                                   "namespace": NAMESPACE}  # fmt: skip
    assert {c["metadata"]["name"] for c in find(objects, "CustomResourceDefinition")} == {
        crd_module.NAME,
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    assert find(render("replicas-2-all-namespaces"), "ClusterKopfPeering")
    deployment = one(objects, "Deployment", f"{RELEASE}-smartthumb-operator")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# --- Pod Security "restricted" ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "optional-on"])
def test_every_pod_is_restricted(name: str) -> None:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               *set_args(VALUES[name]), "--show-only", "templates/tests/api-roundtrip.yaml")  # fmt: skip
    test_pod = yaml.safe_load(out.stdout)
    pods = [d["spec"]["template"]["spec"] for d in find(render(name), "Deployment")]
    pods.append(test_pod["spec"])
    assert len(pods) == 3
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in mounts["tmp"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsUser"] == 65532 and context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
            assert container["image"].endswith(":0.1.0")
            assert container["imagePullPolicy"] == "IfNotPresent"
            assert "resources" in container


def test_probes_and_ports() -> None:
    objects = render("defaults")
    (api,) = one(objects, "Deployment", f"{RELEASE}-smartthumb-api")["spec"]["template"][
        "spec"]["containers"]  # fmt: skip
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8080}]
    (operator,) = one(objects, "Deployment", f"{RELEASE}-smartthumb-operator")["spec"][
        "template"]["spec"]["containers"]  # fmt: skip
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {
        "health": 8080,
        "metrics": 9090,
    }
    runner_sa = one(objects, "ServiceAccount", f"{RELEASE}-smartthumb-runner")
    assert runner_sa["automountServiceAccountToken"] is False


# --- RBAC: exactly the intended rules, each one the code uses ---------------------------------

Rules = set[tuple[str, str, str, str]]  # (apiGroup, resource, resourceName or "", verb)


def rules_of(role: dict[str, Any]) -> Rules:
    return {(group, resource, name, verb)
            for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]
            for name in rule.get("resourceNames", [""])}  # fmt: skip


def expand(group: str, resource: str, verbs: str, name: str = "") -> Rules:
    return {(group, resource, name, verb) for verb in verbs.split()}


OPERATOR_NAMESPACED = (
    expand("smartthumb.dev", "thumbnailjobs", "get list watch delete")
    | expand("smartthumb.dev", "thumbnailjobs/status", "update")
    | expand("smartthumb.dev", "thumbnailjobs/finalizers", "update")
    | expand("batch", "jobs", "create list watch delete")
    | expand("", "pods", "list")
    | expand("", "events", "create")
    | expand("", "secrets", "get")
)
LEASE = (expand("coordination.k8s.io", "leases", "create")
         | expand("coordination.k8s.io", "leases", "get update", f"{RELEASE}-smartthumb-operator"))  # fmt: skip
CRD_WATCH = expand("apiextensions.k8s.io", "customresourcedefinitions", "list watch")
API_NAMESPACED = expand("smartthumb.dev", "thumbnailjobs", "create list watch delete")
API_CLUSTER = expand("apiextensions.k8s.io", "customresourcedefinitions", "get", crd_module.NAME)


def test_rbac_rules_are_exactly_these() -> None:
    objects = render("defaults")
    name = f"{RELEASE}-smartthumb"
    assert rules_of(one(objects, "Role", f"{name}-operator")) == OPERATOR_NAMESPACED
    assert rules_of(one(objects, "Role", f"{name}-operator-lease")) == LEASE
    assert rules_of(one(objects, "ClusterRole", f"{name}-operator")) == (
        CRD_WATCH | expand("", "namespaces", "list watch")
    )
    assert rules_of(one(objects, "Role", f"{name}-api")) == API_NAMESPACED
    assert rules_of(one(objects, "ClusterRole", f"{name}-api")) == API_CLUSTER
    # Peering adds kopf's peering objects; watching every namespace makes it all cluster-wide.
    peering = expand("kopf.dev", "kopfpeerings", "list watch patch")
    assert rules_of(one(render("replicas-2"), "Role", f"{name}-operator")) == (
        OPERATOR_NAMESPACED | peering
    )
    every = render("replicas-2-all-namespaces")
    assert rules_of(one(every, "ClusterRole", f"{name}-operator")) == (
        CRD_WATCH | OPERATOR_NAMESPACED | expand("kopf.dev", "clusterkopfpeerings",
                                                 "list watch patch"))  # fmt: skip
    assert not find(every, "Role", f"{name}-operator")
    # Runner pods get no role at all.
    subjects = [s["name"] for kind in ("RoleBinding", "ClusterRoleBinding")
                for b in find(every, kind) for s in b["subjects"]]  # fmt: skip
    assert f"{name}-runner" not in subjects


KUBE = REPO / "operator" / "smartthumb" / "operator" / "kube"
KOPF = Path(kopf.__file__).parent
OPERATOR_CODE = [KUBE / f for f in ("reconciler.py", "sweep.py", "handlers.py", "childjob.py")]
API_CODE = [KUBE / "backend.py", KUBE / "watchcache.py"]
# (resource, verb) -> where the code uses it: a file and a regular expression.
EVIDENCE: dict[tuple[str, str], tuple[Path, str]] = {
    ("thumbnailjobs", "get"): (KUBE / "reconciler.py", r"\.get_namespaced_custom_object\("),
    ("thumbnailjobs", "list"): (KUBE / "reconciler.py", r"\.list_cluster_custom_object\("),
    ("thumbnailjobs", "watch"): (KUBE / "handlers.py", r"@kopf\.on\.event\(GROUP, VERSION, PLURAL"),
    ("thumbnailjobs", "delete"): (KUBE / "reconciler.py", r"\.delete_namespaced_custom_object\("),
    ("thumbnailjobs", "create"): (KUBE / "backend.py", r"\.create_namespaced_custom_object\("),
    ("thumbnailjobs/status", "update"):
        (KUBE / "reconciler.py", r"\.replace_namespaced_custom_object_status\("),
    ("thumbnailjobs/finalizers", "update"): (KUBE / "childjob.py", r'"blockOwnerDeletion": True'),
    ("jobs", "create"): (KUBE / "reconciler.py", r"\.create_namespaced_job\("),
    ("jobs", "delete"): (KUBE / "reconciler.py", r"\.delete_namespaced_job\("),
    ("jobs", "list"): (KUBE / "reconciler.py", r"\.list_namespaced_job\("),
    ("jobs", "watch"): (KUBE / "handlers.py", r'@kopf\.on\.event\("batch", "v1", "jobs"'),
    ("pods", "list"): (KUBE / "reconciler.py", r"\.list_namespaced_pod\("),
    ("events", "create"): (KUBE / "reconciler.py", r"\.create_namespaced_event\("),
    ("secrets", "get"): (KUBE / "sweep.py", r"\.read_namespaced_secret\("),
    ("leases", "create"): (KUBE / "sweep.py", r"LeaseLock\("),  # client's leader election
    ("leases", "get"): (KUBE / "sweep.py", r"\.read_namespaced_lease\("),
    ("leases", "update"): (KUBE / "sweep.py", r"\.replace_namespaced_lease\("),  # and renewals
    ("customresourcedefinitions", "list"): (KOPF / "_core/reactor/observation.py", r"CRDS"),
    ("customresourcedefinitions", "watch"): (KOPF / "_core/reactor/observation.py", r"CRDS"),
    ("customresourcedefinitions", "get"):
        (KUBE / "backend.py", r"\.read_custom_resource_definition\(CRD_NAME\)"),
    ("namespaces", "list"): (KOPF / "_core/reactor/observation.py", r"NAMESPACES"),
    ("namespaces", "watch"): (KOPF / "_core/reactor/observation.py", r"NAMESPACES"),
    ("kopfpeerings", "list"): (KOPF / "_core/engines/peering.py", r"NAMESPACED_PEERINGS_K"),
    ("kopfpeerings", "watch"): (KOPF / "_core/engines/peering.py", r"NAMESPACED_PEERINGS_K"),
    ("kopfpeerings", "patch"): (KOPF / "_core/engines/peering.py", r"patching\.patch_obj\("),
    ("clusterkopfpeerings", "list"): (KOPF / "_core/engines/peering.py", r"CLUSTER_PEERINGS_K"),
    ("clusterkopfpeerings", "watch"): (KOPF / "_core/engines/peering.py", r"CLUSTER_PEERINGS_K"),
    ("clusterkopfpeerings", "patch"): (KOPF / "_core/engines/peering.py", r"patching\.patch_obj\("),
}  # fmt: skip


def test_every_granted_verb_is_one_the_code_uses() -> None:
    granted = set()
    for name in VALUES:
        for kind in ("Role", "ClusterRole"):
            for role in find(render(name), kind):
                granted |= {(resource, verb) for _, resource, _, verb in rules_of(role)}
    missing = granted - EVIDENCE.keys()
    assert not missing, f"granted, but no evidence in the code: {sorted(missing)}"
    for (resource, verb), (path, pattern) in EVIDENCE.items():
        assert re.search(pattern, path.read_text()), f"{resource} {verb}: {pattern} not in {path}"


CALL = re.compile(r"\.(create|delete|list|read|replace|patch)_namespaced_(\w+?)\(")
VERBS = {"read": "get", "replace": "update"}
RESOURCES = {"custom_object": "thumbnailjobs", "custom_object_status": "thumbnailjobs/status",
             "job": "jobs", "pod": "pods", "event": "events", "secret": "secrets",
             "lease": "leases"}  # fmt: skip


@pytest.mark.parametrize(("code", "role"), [(OPERATOR_CODE, "operator"), (API_CODE, "api")])
def test_every_call_the_code_makes_is_granted(code: list[Path], role: str) -> None:
    objects = render("defaults")
    granted = {(resource, verb) for kind in ("Role", "ClusterRole")
               for r in find(objects, kind) if r["metadata"]["name"].startswith(
                   f"{RELEASE}-smartthumb-{role}")
               for _, resource, _, verb in rules_of(r)}  # fmt: skip
    calls = {(RESOURCES[kind], VERBS.get(verb, verb))
             for path in code for verb, kind in CALL.findall(path.read_text())}  # fmt: skip
    assert calls, "no API calls found: the pattern is stale"
    assert not calls - granted, f"the {role} calls these without a grant: {calls - granted}"


# --- against the real API server: every object is accepted ---------------------------------

SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "ServiceMonitor", "plural": "servicemonitors",
                       "singular": "servicemonitor", "listKind": "ServiceMonitorList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}  # fmt: skip


def apply(cluster: KubeCluster, objects: list[dict[str, Any]], *args: str) -> Any:
    text = "\n---\n".join(json.dumps(o) for o in objects)
    return cluster.kubectl("apply", "-f", "-", *args, input=text, check=False)


def establish(cluster: KubeCluster, crds: list[dict[str, Any]]) -> None:
    out = apply(cluster, crds, "--server-side", "--force-conflicts")
    assert out.returncode == 0, out.stderr
    for crd in crds:
        cluster.kubectl("wait", "--for=condition=Established",
                        f"crd/{crd['metadata']['name']}", "--timeout=30s")  # fmt: skip


@pytest.mark.cluster
@pytest.mark.parametrize("name", VALUES)
def test_every_object_is_accepted_by_the_api_server(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, name: str
) -> None:
    objects = list(render(name, namespace))
    # Custom resources need their CRDs for real: kopf's peering CRDs (as rendered) and a
    # minimal ServiceMonitor CRD (the Prometheus Operator's is not installed here). The
    # ThumbnailJob CRD is the session's already, so it is dry-run like everything else.
    extra = [o for o in objects if o["kind"] == "CustomResourceDefinition"
             and o["metadata"]["name"] != crd_module.NAME]  # fmt: skip
    if find(tuple(objects), "ServiceMonitor"):
        extra.append(SERVICE_MONITOR_CRD)
    if extra:
        establish(kube_cluster, extra)
    kinds = ("KopfPeering", "ClusterKopfPeering", "ServiceMonitor")
    sent = [o for o in objects if o not in extra]
    for _ in range(50):  # discovery of a new CRD's resource lags a moment behind Established
        out = apply(kube_cluster, sent, "--dry-run=server", "-o", "name")
        if out.returncode == 0 or not any(f'kind "{k}"' in out.stderr for k in kinds):
            break
        subprocess.run(["sleep", "0.2"], check=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == len(sent)
