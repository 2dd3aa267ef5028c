"""A real Kubernetes node for the test suite: kubelet + containerd + runc + CNI on this
machine, joined to the control plane of ``kube_cluster`` beside kwok's fake node.

Pods on it really run: images are imported into containerd from the tar files that
``hack/images.sh`` (``make images``) leaves in its cache, and the sandbox image is one static
Go binary made here (no registry, no pulls), memory
limits are enforced by the kernel (a real ``OOMKilled``), and the runner's termination
message comes back through the kubelet.

Everything lives in one temporary directory: containerd's root, state and socket, the CNI
configuration, IPAM state and network namespaces, the kubelet's root directory. Teardown
(also when a test or the start-up fails, and from ``atexit``) stops the kubelet, kills and
deletes every container, stops containerd, unmounts what is mounted under that directory,
deletes the CNI bridge and the kubelet's cgroups, and removes the directory.

The node is tainted ``smartthumb.dev/real-node=true:NoSchedule`` and labelled
``smartthumb.dev/real-node=true``: only pods that tolerate and select it land there (see
``REAL_NODE_POD``), so the kwok tests never do.

Needs root, Debian's containerd, runc and containernetworking-plugins (``hack/ensure-node.sh``),
the kubelet built by ``hack/testbin.sh`` and the image tars; without them the ``node`` tests
are skipped, or fail when ``CI`` / ``SMARTTHUMB_REQUIRE_CLUSTER`` is set.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubecluster import (
    SETPRIV,
    ClusterStartError,
    Component,
    KubeCluster,
    _https_ok,
    _require_cluster,
    free_port,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
IMAGES_SCRIPT = REPO / "hack" / "images.sh"
NODE_NAME = "st-node-0"
NODE_LABEL = "smartthumb.dev/real-node"
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
REAL_NODE_POD: dict[str, Any] = {
    "nodeSelector": {NODE_LABEL: "true"},
    "tolerations": [
        {"key": NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ],
}
"""What a pod needs to run on the real node (runnerPod, or a pod spec)."""


@dataclass
class RealNode:
    name: str
    workdir: Path
    containerd_socket: Path
    bridge: str
    cgroup_root: str
    """The kubelet's cgroupRoot, in every v1 hierarchy: one per node, removed at teardown."""
    images: dict[str, str]
    """Image names imported, by role: runner, operator."""
    subnet: str
    """The pods' addresses (CNI host-local range of the node's bridge)."""
    gateway: str
    """The bridge's address on this machine: how pods reach servers the tests start here."""
    components: list[Component] = field(default_factory=list)
    kube_proxy: Path | None = None
    """kube-proxy's binary while node_services runs it: teardown removes its iptables rules."""

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def pod_logs(self, namespace: str, lines: int = 30) -> str:
        """The last lines of every container log of the namespace's pods (failure messages:
        `kubectl logs` needs a node address the apiserver can reach, which this node lacks)."""
        out = []
        for log in sorted((self.workdir / "pod-logs").glob(f"{namespace}_*/*/*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.parent.parent.name.split('_')[1]}/{log.parent.name}")
            out.extend(line.split(" ", 3)[-1] for line in tail)  # drop CRI's time/stream/tag
        return "\n".join(out)

    def containers(self, namespace: str | None = None) -> list[str]:
        """Container ids, all or those of pods in one Kubernetes namespace."""
        where = [f'labels."io.kubernetes.pod.namespace"=={namespace}'] if namespace else []
        out = self.ctr("containers", "list", "-q", *where, check=False)
        return [line for line in out.stdout.split() if line]


def image_tars() -> dict[str, tuple[str, Path]]:
    """role (runner, operator) -> (image, tar) as hack/images.sh names them: its tar
    <role>-<hash12>.tar holds smartthumb-<role>:<hash12>, exactly what the tests run."""
    out = subprocess.run(
        ["bash", str(IMAGES_SCRIPT), "--print-tars"], capture_output=True, text=True, check=False
    )
    found = {}
    for line in out.stdout.split():
        tar = Path(line)
        role, _, digest = tar.stem.rpartition("-")
        found[role] = (f"smartthumb-{role}:{digest}", tar)
    return found


PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The pod sandbox's process: it only waits to be stopped.
func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
"""


def pause_image(directory: Path) -> Path:
    """The sandbox ("pause") image, as a `docker save` archive: one static Go binary (there
    is no registry to pull registry.k8s.io/pause from)."""
    source = directory / "pause-src"
    source.mkdir()
    (source / "main.go").write_text(PAUSE_GO)
    (source / "go.mod").write_text("module smartthumb.local/pause\n\ngo 1.21\n")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", "."],
        cwd=source,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tar.gettarinfo(source / "pause", arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with open(source / "pause", "rb") as binary:
            tar.addfile(info, binary)
    layer_bytes = layer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
            },
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    archive = directory / "pause.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def missing_prerequisites(bin_dir: Path) -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("containerd", "runc", "ctr", "ip", "go"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not (CNI_BIN / "bridge").exists():
        missing.append("containernetworking-plugins (hack/ensure-node.sh)")
    for binary in ("kubelet", "kube-proxy"):
        if not os.access(bin_dir / binary, os.X_OK):
            missing.append(f"{bin_dir}/{binary} (make testbin)")
    if shutil.which("iptables-restore") is None:
        missing.append("iptables")
    tars = image_tars()
    for role in ("runner", "operator"):
        if role not in tars or not tars[role][1].exists():
            missing.append(f"the {role} image (make images)")
    return missing


_LIVE: list[RealNode] = []


@atexit.register
def _teardown_all() -> None:
    for node in _LIVE:
        teardown(node)


def _containerd_config(workdir: Path, socket: Path) -> str:
    return f"""version = 2
root = "{workdir}/containerd/root"
state = "{workdir}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = "{socket}.debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj to the kubelet's -998.
  restrict_oom_score_adj = true
  netns_mounts_under = "{workdir}/netns"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{workdir}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


def _cni_config(workdir: Path, bridge: str, subnet: str) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "smartthumb-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(workdir / "cni-ipam"),
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def _kubelet_config(workdir: Path, socket: Path, cgroup_root: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failCgroupV1": False,  # this host is cgroup v1
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},  # tests only: nothing else reaches it
        "address": "127.0.0.1",
        "port": free_port(),
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "readOnlyPort": 0,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "makeIPTablesUtilChains": False,  # leave this machine's iptables alone
        "podLogsDir": str(workdir / "pod-logs"),  # not /var/log/pods: removed with the node
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerWithTaints": [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        "staticPodPath": "",
        "resolvConf": "",
        "maxPods": 110,
    }


def _start(node: RealNode, name: str, argv: list[str]) -> Component:
    log = node.workdir / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
        proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    component = Component(name, proc, log)
    node.components.append(component)
    return component


@contextlib.contextmanager
def start_real_node(
    cluster: KubeCluster, images: dict[str, tuple[str, Path]]
) -> Iterator[RealNode]:
    # A short path: unix socket paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="st-node-", dir="/tmp"))
    tag = uuid.uuid4().hex[:6]
    bridge = f"stbr{tag}"
    # Its own /24 (two nodes at once, e.g. a benchmark beside the tests, must not share one).
    third = int(tag[:2], 16)
    node = RealNode(
        NODE_NAME,
        workdir,
        workdir / "containerd.sock",
        bridge,
        f"/smartthumb-{workdir.name}",
        {role: name for role, (name, _) in images.items()},
        subnet=f"10.89.{third}.0/24",
        gateway=f"10.89.{third}.1",
    )
    _LIVE.append(node)
    try:
        # The bridge and its address now, not at the first pod: servers the tests start here
        # (S3, URL sources) must be reachable at the gateway before any pod exists.
        for command in (
            ["link", "add", "name", bridge, "type", "bridge"],
            ["addr", "add", f"{node.gateway}/24", "dev", bridge],
            ["link", "set", bridge, "up"],
        ):
            subprocess.run(["ip", *command], check=True, capture_output=True)
        (workdir / "cni").mkdir()
        (workdir / "cni" / "10-smartthumb.conflist").write_text(
            json.dumps(_cni_config(workdir, bridge, node.subnet))
        )
        config = workdir / "containerd.toml"
        config.write_text(_containerd_config(workdir, node.containerd_socket))
        containerd = _start(node, "containerd", ["containerd", "--config", str(config)])
        wait_for(
            "containerd's socket",
            lambda: node.ctr("version", check=False).returncode == 0,
            None,
            60,
            containerd,
        )
        for tar in [pause_image(workdir), *(tar for _, tar in images.values())]:
            node.ctr("images", "import", str(tar))
        _make_cgroups(node.cgroup_root)
        kubelet_config = workdir / "kubelet.yaml"
        kubelet_config.write_text(
            json.dumps(_kubelet_config(workdir, node.containerd_socket, node.cgroup_root))
        )
        kubelet = _start(
            node,
            "kubelet",
            [
                str(cluster.bin_dir / "kubelet"),
                f"--config={kubelet_config}",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--root-dir={workdir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-labels={NODE_LABEL}=true",
                "--node-ip=127.0.0.1",
            ],
        )
        from kubernetes import client

        with cluster.api_client() as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                found = core.list_node(field_selector=f"metadata.name={NODE_NAME}").items
                return bool(found) and any(
                    c.type == "Ready" and c.status == "True"
                    for c in found[0].status.conditions or []
                )

            wait_for(f"node {NODE_NAME} Ready (kubelet)", ready, cluster, 120, kubelet)
        yield node
    finally:
        teardown(node)


def teardown(node: RealNode) -> None:
    """Leave nothing behind: processes, containers, mounts, the bridge, cgroups, files."""
    with contextlib.suppress(ValueError):
        _LIVE.remove(node)
    kubelet = [c for c in node.components if c.name == "kubelet"]
    for component in kubelet:
        component.stop(grace=10)
    if node.containerd_socket.exists():
        for container in node.containers():
            node.ctr("tasks", "kill", "-s", "KILL", container, check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tasks = node.ctr("tasks", "list", "-q", check=False).stdout.split()
            for task in tasks:
                node.ctr("tasks", "delete", "-f", task, check=False)
            if not tasks:
                break
            time.sleep(0.5)
        for container in node.containers():
            node.ctr("containers", "delete", container, check=False)
    for component in node.components:
        component.stop(grace=10)
    _remove_kube_proxy_rules(node)
    _remove_container_log_links(node.workdir)
    _unmount_under(node.workdir)
    subprocess.run(["ip", "link", "del", node.bridge], capture_output=True, check=False)
    _remove_cgroups(node.cgroup_root)
    shutil.rmtree(node.workdir, ignore_errors=True)


KUBE_PROXY_LOCK = Path("/tmp/smartthumb-kube-proxy.lock")
"""kube-proxy owns the KUBE-* chains of this machine's iptables: one at a time."""


class ServicesBusy(RuntimeError):
    """Another kube-proxy holds this machine's iptables."""


def _kube_proxy_config(node: RealNode, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "clusterCIDR": node.subnet,
        "healthzBindAddress": f"127.0.0.1:{free_port()}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "nodePortAddresses": [f"{node.gateway}/32"],
        # Masquerade: a pod calling a Service whose endpoint is on the same bridge gets its
        # answer back through the NAT whatever br_netfilter's sysctls say.
        "iptables": {
            "masqueradeAll": True,
            "localhostNodePorts": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "0s",
        },
        # Zero: leave this machine's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def _apiserver_endpoint(node: RealNode, server: str) -> dict[str, Any]:
    """The `kubernetes` Service's endpoint (the test apiserver reconciles none): the node's
    gateway, where pods reach the apiserver listening on all addresses."""
    port = int(server.rsplit(":", 1)[1])
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [node.gateway], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


@contextlib.contextmanager
def node_services(cluster: KubeCluster, node: RealNode, wait_s: float = 0) -> Iterator[None]:
    """Services work for pods on the real node and for this machine, as in any cluster:
    kube-proxy (iptables mode) on the node, and the `kubernetes` Service (10.0.0.1:443, what
    in-cluster clients such as the chart's operator and API call) pointing at the apiserver.
    The iptables rules are removed after, also when the start fails. ServicesBusy when another
    kube-proxy of this machine (`make cluster`, another test session) is still running after
    `wait_s` seconds."""
    from kubernetes import client

    with open(KUBE_PROXY_LOCK, "w") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServicesBusy(
                        f"another kube-proxy runs on this machine ({KUBE_PROXY_LOCK}"
                        " is locked: `make cluster`, or another test session)"
                    )
                time.sleep(1)
        node.kube_proxy = cluster.bin_dir / "kube-proxy"
        config = node.workdir / "kube-proxy.yaml"
        config.write_text(json.dumps(_kube_proxy_config(node, cluster.kubeconfig)))
        try:
            with cluster.api_client() as api:
                discovery = client.DiscoveryV1Api(api)
                discovery.create_namespaced_endpoint_slice(
                    "default", _apiserver_endpoint(node, cluster.server)
                )
                try:
                    proxy = _start(node, "kube-proxy", [str(node.kube_proxy), f"--config={config}"])
                    wait_for(
                        "the kubernetes Service through kube-proxy",
                        lambda: _service_answers(cluster),
                        cluster,
                        60,
                        proxy,
                    )
                    yield
                finally:
                    discovery.delete_namespaced_endpoint_slice("kubernetes", "default")
        finally:
            for component in [c for c in node.components if c.name == "kube-proxy"]:
                component.stop(grace=10)
                node.components.remove(component)
            _remove_kube_proxy_rules(node)


def _service_answers(cluster: KubeCluster) -> bool:
    """The apiserver answers at the `kubernetes` Service's cluster IP (kube-proxy's rules)."""
    try:
        return _https_ok("https://10.0.0.1/readyz", token=cluster.token, ca_file=cluster.ca_file)
    except OSError:
        return False


# What `kube-proxy --cleanup` leaves: its copy of the kubelet's martian-packet chain (which it
# never deletes, in case a kubelet uses it: this node's kubelet makes no iptables chains), the
# mode hint and the canaries.
KUBE_PROXY_KEPT = (
    ("filter", "KUBE-FIREWALL", ("INPUT", "OUTPUT")),
    ("mangle", "KUBE-IPTABLES-HINT", ()),
    *((table, "KUBE-PROXY-CANARY", ()) for table in ("filter", "nat", "mangle")),
)


def _remove_kube_proxy_rules(node: RealNode) -> None:
    if node.kube_proxy is None:
        return
    subprocess.run(
        [str(node.kube_proxy), "--cleanup"], capture_output=True, check=False, timeout=60
    )
    for tool in ("iptables", "ip6tables"):
        for table, chain, jumps_from in KUBE_PROXY_KEPT:
            for parent in jumps_from:
                subprocess.run(
                    [tool, "-w", "-t", table, "-D", parent, "-j", chain],
                    check=False,
                    capture_output=True,
                )
            for action in ("-F", "-X"):
                subprocess.run(
                    [tool, "-w", "-t", table, action, chain], check=False, capture_output=True
                )
    node.kube_proxy = None


def _remove_container_log_links(workdir: Path) -> None:
    """The kubelet's links in /var/log/containers to logs of this node (a kubelet stopped
    with its pods still there does not remove them)."""
    for link in Path("/var/log/containers").glob("*.log"):
        if link.is_symlink() and os.readlink(link).startswith(str(workdir)):
            link.unlink()


def _unmount_under(directory: Path) -> None:
    prefix = str(directory)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _make_cgroups(root: str) -> None:
    """cgroupRoot must exist in every v1 hierarchy before the kubelet starts."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        top = hierarchy / root.lstrip("/")
        top.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset admits no process
            if (top / knob).exists() and not (top / knob).read_text().strip():
                (top / knob).write_text((hierarchy / knob).read_text())


def _remove_cgroups(root: str) -> None:
    """The kubelet's pod cgroups under cgroupRoot, in every v1 hierarchy, deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / root.lstrip("/")
        if not top.is_dir():
            continue
        for directory in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


@pytest.fixture(scope="session")
def real_node(kube_cluster: KubeCluster) -> Iterator[RealNode]:
    """The real node (see the module docstring), shared by the whole session."""
    missing = missing_prerequisites(kube_cluster.bin_dir)
    if missing:
        message = f"no real node: missing {', '.join(missing)}"
        if _require_cluster():
            pytest.fail(message)
        pytest.skip(message)
    try:
        with start_real_node(kube_cluster, image_tars()) as node:
            yield node
    except ClusterStartError as error:
        pytest.fail(f"the real node did not start: {error}")


@pytest.fixture(scope="module")
def real_node_services(kube_cluster: KubeCluster, real_node: RealNode) -> Iterator[RealNode]:
    """The real node with Services working (kube-proxy): what pods that call the API server
    or another Service (the Helm chart's) need. For one module at a time: `make cluster` (its
    test included) runs a kube-proxy of its own."""
    try:
        with node_services(kube_cluster, real_node, wait_s=300):
            yield real_node
    except (ClusterStartError, ServicesBusy) as error:
        pytest.fail(f"kube-proxy did not start: {error}")
