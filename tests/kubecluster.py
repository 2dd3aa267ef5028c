"""A real Kubernetes control plane for the test suite, with no Docker.

``kube_cluster`` (session scope) starts, on loopback, from the binaries that
``hack/testbin.sh`` (``make testbin``) builds into
``${SMARTTHUMB_TESTBIN:-~/.cache/smartthumb/testbin}/<k8s-version>/bin``:

- etcd (``--unsafe-no-fsync``, data in a temporary directory),
- kube-apiserver (token auth for an ``admin`` user in ``system:masters``, RBAC, serving
  certificate from a throwaway CA, a service-account signing key),
- kube-controller-manager with only the controllers the tests need: job,
  ttl-after-finished, garbage-collector, serviceaccount, namespace,
- kube-scheduler,
- kwok, playing the kubelet of one fake node (``kwok-node-0``), with the pod Stages in
  ``hack/kwok/stages.yaml``,

waits until the apiserver is ready, the controller manager and scheduler are healthy and the
fake node is Ready, and yields a :class:`KubeCluster`. Teardown kills the process group of
every component, also when a test (or the startup itself) fails; an ``atexit`` hook does the
same if the interpreter is left some other way, and each component is started under
``setpriv --pdeathsig KILL`` so that the kernel kills it if the test process is killed.

How a pod ends is chosen per pod (kwok Stages, see ``hack/kwok/stages.yaml``):

- no label: a pod owned by a Job runs, then completes (exit 0, ``Completed``,
  phase ``Succeeded``);
- label ``smartthumb.io/simulate: oom``: the container ends ``terminated`` with
  ``reason: OOMKilled``, ``exitCode: 137``, pod phase ``Failed``;
- label ``smartthumb.io/simulate: sigkill``: ``reason: Error``, ``exitCode: 137``
  (a kill that the runtime did not report as OOMKilled);
- label ``smartthumb.io/simulate: error``: ``reason: Error``, exit code 1 or the value of the
  annotation ``smartthumb.io/simulate-exit-code``;
- annotation ``smartthumb.io/simulate-memory-need: "512Mi"`` (and none of the labels above):
  ``OOMKilled``/137/``Failed`` when a container's memory limit is below that amount, else the
  pod completes as usual: a retry with a bigger limit succeeds, as with a real OOM (pods
  labelled ``smartthumb.dev/runner: fallback`` read
  ``smartthumb.io/simulate-fallback-memory-need`` instead);
- annotation ``smartthumb.io/simulate-duration: "3s"``: how long the pod runs first;
- annotation ``smartthumb.io/simulate-message``: the container's ``terminated.message``
  (what a real runner would write to its termination log).

Put the label/annotations on a Job's ``spec.template.metadata``. Use ``restartPolicy: Never``.

Environment:

- ``SMARTTHUMB_TESTBIN``: cache root (default ``~/.cache/smartthumb/testbin``);
- ``SMARTTHUMB_TESTBIN_BIN``: use the binaries in this directory instead;
- without the binaries the cluster tests are skipped, unless ``CI`` or
  ``SMARTTHUMB_REQUIRE_CLUSTER`` is set, in which case they fail.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTBIN_SCRIPT = REPO / "hack" / "testbin.sh"
KWOK_STAGES = REPO / "hack" / "kwok" / "stages.yaml"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)
CONTROLLERS = (
    "job-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "persistentvolume-binder-controller",  # the real-node tests mount a pre-bound PVC
    "deployment-controller",  # the Helm chart's Deployments (test_helm_install.py)
    "replicaset-controller",
    "endpointslice-controller",  # Services of pods on the real node (kube-proxy reads slices)
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt: pods with a token mount
)
NODE_NAME = "kwok-node-0"
SIMULATE_LABEL = "smartthumb.io/simulate"
SIMULATE_DURATION_ANNOTATION = "smartthumb.io/simulate-duration"
SIMULATE_MESSAGE_ANNOTATION = "smartthumb.io/simulate-message"
SIMULATE_EXIT_CODE_ANNOTATION = "smartthumb.io/simulate-exit-code"
SIMULATE_MEMORY_NEED_ANNOTATION = "smartthumb.io/simulate-memory-need"
SIMULATE_FALLBACK_MEMORY_NEED_ANNOTATION = "smartthumb.io/simulate-fallback-memory-need"

SETPRIV = shutil.which("setpriv")
STARTUP_TIMEOUT = float(os.environ.get("SMARTTHUMB_CLUSTER_STARTUP_TIMEOUT", "120"))


class ClusterStartError(RuntimeError):
    """A component did not come up; the message carries the tail of its log."""


def testbin_dir() -> Path:
    """Where ``hack/testbin.sh`` puts (or has put) the binaries."""
    override = os.environ.get("SMARTTHUMB_TESTBIN_BIN")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(TESTBIN_SCRIPT), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def missing_binaries(bin_dir: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def build_failures(bin_dir: Path) -> str:
    """What ``hack/testbin.sh`` recorded about tools that failed to build, if anything."""
    records = sorted((bin_dir / ".stamps").glob("*.failed"))
    return "\n".join(f"--- {r.stem} failed to build:\n{_tail(r, 15)}" for r in records)


_PORTS = random.SystemRandom()


def free_port() -> int:
    """A port free on every address, below the ephemeral range: the kernel hands ports in
    that range to outgoing connections too (and there are many here), so one picked there can
    be taken before its server binds it (CI saw kopf's liveness port go that way)."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    for _ in range(200):
        port = _PORTS.randint(max(1024, low - 12000), low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Kill the component's whole process group: SIGTERM, then SIGKILL."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        # The leader may be gone while children in its group live on: always SIGKILL the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@dataclass
class KubeCluster:
    """A running control plane. ``kubeconfig`` is a file; ``server`` the apiserver URL."""

    bin_dir: Path
    workdir: Path
    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    node_name: str = NODE_NAME
    components: list[Component] = field(default_factory=list)

    # -- clients ------------------------------------------------------------------------------
    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for the admin user."""
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.server
        conf.api_key = {"authorization": self.token}
        conf.api_key_prefix = {"authorization": "Bearer"}
        conf.ssl_ca_cert = str(self.ca_file)
        return client.ApiClient(conf)

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` and the binaries first on ``PATH``."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    def logs(self) -> dict[str, Path]:
        return {c.name: c.log for c in self.components}

    def check_alive(self) -> None:
        for c in self.components:
            if not c.alive():
                raise ClusterStartError(
                    f"{c.name} exited with {c.proc.returncode}; last lines of {c.log}:\n{_tail(c.log)}"
                )

    def stop(self) -> None:
        for c in reversed(self.components):
            c.stop()


def wait_for(
    what: str,
    probe: Callable[[], bool],
    cluster: KubeCluster | None,
    timeout: float,
    component: Component | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if component is not None and not component.alive():
            raise ClusterStartError(
                f"{component.name} exited with {component.proc.returncode} while waiting for {what}; "
                f"last lines of {component.log}:\n{_tail(component.log)}"
            )
        if cluster is not None:
            cluster.check_alive()
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(0.25)
    logs = ""
    if component is not None:
        logs = f"\nlast lines of {component.log}:\n{_tail(component.log)}"
    raise ClusterStartError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r}){logs}"
    )


def _https_ok(url: str, *, token: str | None = None, ca_file: Path | None = None) -> bool:
    ctx = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file
        else ssl._create_unverified_context()
    )
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ClusterStartError(
            "openssl is needed to make the test certificates (apt-get install openssl)"
        )
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(pki: Path) -> None:
    """A throwaway CA, the apiserver's serving certificate, and a service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "7", "-subj", "/CN=smartthumb-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=pki,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
        "-subj", "/CN=kube-apiserver",
        cwd=pki,
    )  # fmt: skip
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "apiserver.crt", "-days", "7", "-extfile", "apiserver.ext",
        cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> None:
    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "smartthumb-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {"name": "smartthumb-test", "context": {"cluster": "smartthumb-test", "user": "admin"}}
        ],
        "current-context": "smartthumb-test",
    }
    path.write_text(json.dumps(conf, indent=2))  # JSON is YAML
    path.chmod(0o600)


_LIVE: list[KubeCluster] = []


@atexit.register
def _stop_all() -> None:
    for cluster in _LIVE:
        cluster.stop()


@contextlib.contextmanager
def start_kube_cluster(bin_dir: Path, workdir: Path) -> Iterator[KubeCluster]:
    """Start the control plane in ``workdir``; stop it on exit, whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    pki = workdir / "pki"
    make_pki(pki)
    token = os.urandom(16).hex()
    (workdir / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')

    etcd_port, etcd_peer_port, api_port, kcm_port, sched_port = (free_port() for _ in range(5))
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki / "ca.crt", token)
    cluster = KubeCluster(
        bin_dir=bin_dir,
        workdir=workdir,
        kubeconfig=kubeconfig,
        server=server,
        token=token,
        ca_file=pki / "ca.crt",
    )
    _LIVE.append(cluster)

    def start(name: str, *args: str) -> Component:
        log = logs / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - handed to the child
        # setpriv (util-linux) makes the kernel SIGKILL the component if this test process
        # dies without running its teardown (kill -9, a CI time-out).
        prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
        try:
            proc = subprocess.Popen(
                [*prefix, str(bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # own process group: killpg on teardown
            )
        finally:
            fh.close()
        comp = Component(name, proc, log)
        cluster.components.append(comp)
        return comp

    try:
        etcd = start(
            "etcd",
            "--name=default",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        wait_for(
            "etcd /health",
            lambda: (
                json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=5).read()
                )["health"]
                == "true"
            ),
            cluster,
            STARTUP_TIMEOUT,
            etcd,
        )

        apiserver = start(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            # All addresses: pods on the real node reach it at their bridge's gateway, through
            # the `kubernetes` Service (realnode.node_services); clients here use 127.0.0.1.
            "--bind-address=0.0.0.0",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            # A new Node gets a not-ready NoSchedule taint from this plugin, and only the node
            # lifecycle controller (not run here) would take it away again.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={workdir / 'apiserver-certs'}",
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: _https_ok(f"{server}/readyz", token=token, ca_file=pki / "ca.crt"),
            cluster,
            STARTUP_TIMEOUT,
            apiserver,
        )

        kcm = start(
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={workdir / 'kcm-certs'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
        )
        scheduler = start(
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={workdir / 'scheduler-certs'}",
        )
        kwok = start(
            "kwok",
            f"--kubeconfig={kubeconfig}",
            f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.1/24",
            "--node-ip=10.244.0.1",
        )

        from kubernetes import client

        with cluster.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_node(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": NODE_NAME,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": NODE_NAME,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    },
                }
            )

            def node_ready() -> bool:
                node = core.read_node(NODE_NAME)
                return any(
                    c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
                )

            wait_for(f"node {NODE_NAME} Ready (kwok)", node_ready, cluster, STARTUP_TIMEOUT, kwok)
            wait_for(
                "kube-controller-manager /healthz",
                lambda: _https_ok(f"https://127.0.0.1:{kcm_port}/healthz"),
                cluster,
                STARTUP_TIMEOUT,
                kcm,
            )
            wait_for(
                "kube-scheduler /healthz",
                lambda: _https_ok(f"https://127.0.0.1:{sched_port}/healthz"),
                cluster,
                STARTUP_TIMEOUT,
                scheduler,
            )
            # The serviceaccount controller must have run before pods can be admitted.
            wait_for(
                "the default ServiceAccount",
                lambda: core.read_namespaced_service_account("default", "default") is not None,
                cluster,
                STARTUP_TIMEOUT,
                kcm,
            )
        yield cluster
    finally:
        cluster.stop()
        with contextlib.suppress(ValueError):
            _LIVE.remove(cluster)


def _require_cluster() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("SMARTTHUMB_REQUIRE_CLUSTER"))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A running control plane (see the module docstring), shared by the whole session."""
    pytest.importorskip("kubernetes")
    bin_dir = testbin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        msg = (
            f"control-plane binaries missing from {bin_dir}: {', '.join(missing)} "
            f"(run `make testbin`)\n{build_failures(bin_dir)}"
        )
        if _require_cluster():
            pytest.fail(msg)
        pytest.skip(msg)
    # A short path: some components put unix sockets under their working directory.
    workdir = Path(tempfile.mkdtemp(prefix="st-kube-"))
    try:
        with start_kube_cluster(bin_dir, workdir) as cluster:
            yield cluster
    finally:
        keep = tmp_path_factory.getbasetemp() / "kube-cluster-logs"
        with contextlib.suppress(OSError):
            shutil.copytree(workdir / "logs", keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
