"""Shared pytest setup: the real control plane and the fixtures its tests share."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver import BACKENDS
from kubecluster import KubeCluster, kube_cluster  # noqa: F401  (session-scoped control plane)
from realnode import real_node, real_node_services  # noqa: F401  (session-scoped real node)
from s3server import s3_server  # noqa: F401  (session-scoped S3 server)
from smartthumb.operator.kube import crd as crd_module
from smartthumb.operator.kube.resource import GROUP, KIND, VERSION

CRD_FILE = Path(__file__).resolve().parent.parent / crd_module.OUTPUT


def poll(what: str, probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[Any]:  # noqa: F811
    """A ``kubernetes.client.ApiClient`` for the admin user of the test cluster."""
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})

    def default_sa() -> bool:
        try:
            return core.read_namespaced_service_account("default", name) is not None
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    poll(f"the default ServiceAccount in {name}", default_sa)
    yield name
    core.delete_namespace(name)


def thumbnailjob(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="session")
def installed_crd(kube_cluster: KubeCluster) -> str:  # noqa: F811
    """The committed CRD file applied to the cluster, Established and served. It stays
    installed for the rest of the session (applying it again is a no-op)."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{crd_module.NAME}", "--timeout=30s"
    )
    # Discovery of a new resource can lag a moment behind Established.
    poll(
        "the ThumbnailJob resource to be served",
        lambda: kube_cluster.kubectl("get", "tj", "-A", check=False).returncode == 0,
    )
    return crd_module.NAME


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """ "local" or "kubernetes": a test taking it runs on both backends (see apiserver.serve)."""
    return request.param
