"""The operator's parts, wired once at start-up: API client, storage, reconciler, sweep,
webhook sender and the metrics endpoint."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client, config
from prometheus_client import start_http_server
from smartthumb.operator.kube.metrics import OperatorMetrics
from smartthumb.operator.kube.reconciler import Reconciler
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.operator.kube.storage import VolumeStorage
from smartthumb.operator.kube.sweep import Sweep
from smartthumb.operator.webhooks import WebhookSender

API_CONNECTIONS = 16
"""kopf's handler threads, the sweep and the webhook senders share one connection pool."""


def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: KUBECONFIG (or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = API_CONNECTIONS
    return client.ApiClient(configuration)


class Operator:
    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.api = api
        self.metrics = OperatorMetrics()
        secret = settings.webhook_secret
        self.sender = WebhookSender(
            public_url=settings.public_url,
            secret=secret.get_secret_value() if secret else None,
            timeout_s=settings.webhook_timeout_s,
            allow_private=settings.allow_private_webhooks,
        )
        storage = VolumeStorage(settings.volume_path)
        self.reconciler = Reconciler(settings, api, storage, self.metrics)
        self.sweep = Sweep(settings, api, self.reconciler, self.sender)
        self.reconciler.wake = self.sweep.wake
        self.metrics.watch(lambda: self.sweep.stats)
        self._metrics_server: Any = None

    @classmethod
    def from_environment(cls) -> Operator:
        return cls(OperatorSettings(), api_client())

    def start(self) -> None:
        if self.settings.metrics_port:
            self._metrics_server, _ = start_http_server(
                self.settings.metrics_port, registry=self.metrics.registry
            )
        self.sweep.start()

    def stop(self) -> None:
        self.sweep.stop()
        self.sender.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.api.close()

    def health(self) -> dict[str, Any]:
        """What kopf's liveness endpoint reports besides its own checks."""
        last = self.sweep.last_round
        return {
            "sweep_rounds": self.sweep.rounds,
            "seconds_since_sweep": None if last is None else round(time.monotonic() - last, 1),
            "queued": self.sweep.stats.queued,
            "running": self.sweep.stats.running,
        }
