"""The operator's parts, wired once at start-up: API client, storage, reconciler, sweep,
webhook sender and the metrics endpoint."""

from __future__ import annotations

import os
import time
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server
from smartthumb.operator.kube.metrics import OperatorMetrics
from smartthumb.operator.kube.reconciler import Reconciler
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.operator.kube.storage import storage_for
from smartthumb.operator.kube.sweep import Sweep
from smartthumb.operator.webhooks import WebhookSender

API_CONNECTIONS = 16
"""kopf's handler threads, the sweep and the webhook senders share one connection pool."""


def client_configuration() -> client.Configuration:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG (read now, not at import time as
    the client library's default does), else ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.connection_pool_maxsize = API_CONNECTIONS
    return configuration


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials for kopf's own connections (its watches and patches)."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class Operator:
    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.api = api
        self.metrics = OperatorMetrics()
        self.sender = WebhookSender.from_settings(settings, settings.public_url)
        storage = storage_for(settings)
        self.reconciler = Reconciler(settings, api, storage, self.metrics)
        self.sweep = Sweep(settings, api, self.reconciler, self.sender)
        self.reconciler.wake = self.sweep.wake
        self.metrics.watch(lambda: self.sweep.stats)
        self._metrics_server: Any = None

    @classmethod
    def from_environment(cls) -> Operator:
        return cls(OperatorSettings(), client.ApiClient(client_configuration()))

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
