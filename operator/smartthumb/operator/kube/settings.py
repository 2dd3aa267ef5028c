"""OperatorSettings: every SMARTTHUMB_* environment variable of `smartthumb-operator`; the
API's Kubernetes backend's (KubernetesBackendSettings); the storage settings they share."""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.networks import IPvAnyNetwork
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from smartthumb.operator.kube.resource import Toleration
from smartthumb.operator.lifecycle import LifecyclePolicy
from smartthumb.operator.settings import WebhookSettings
from smartthumb.runner.limits import Limits, env_name, parse_allow_private, split_commas


def _env_text(value: object) -> str:
    """A setting as an environment variable: lists comma-separated, booleans lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class StorageSettings(BaseModel):
    """Where the images live: the shared volume, or S3-compatible object storage. The API
    and the operator must agree (the Helm chart sets both from one value)."""

    storage: Literal["volume", "s3"] = Field(
        "volume",
        description=(
            "`volume`: a shared volume mounted by the API, the operator and every runner pod; "
            "`s3`: a bucket (runner pods get presigned URLs and hold no credentials)."
        ),
    )
    volume_path: Path = Field(
        Path("/data"),
        description=(
            "Where the shared volume is mounted, in the operator's pod and in every runner pod "
            "(and the API's): ThumbnailJob sources and outputs are relative to it."
        ),
    )
    s3_bucket: str | None = Field(
        None, description="The bucket of uploads and thumbnails (storage `s3`)."
    )
    s3_endpoint: str | None = Field(
        None,
        description="URL of an S3-compatible server (MinIO, versitygw, Ceph...); unset: AWS. "
        "Runner pods must reach it too.",
    )
    s3_region: str = Field("us-east-1", description="The bucket's region.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="Unset: AWS_ACCESS_KEY_ID or the pod's cloud identity."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Unset: AWS_SECRET_ACCESS_KEY or the pod's cloud identity."
    )
    s3_url_expiry_s: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="Lifetime of the presigned URLs a runner pod gets (at least its timeout).",
    )

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> StorageSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("SMARTTHUMB_STORAGE=s3 needs SMARTTHUMB_S3_BUCKET")
        return self


class OperatorSettings(StorageSettings, WebhookSettings, BaseSettings):
    """Settings of `smartthumb-operator` (environment prefix SMARTTHUMB_)."""

    # An empty variable counts as unset (SMARTTHUMB_VOLUME_HOST_PATH= in a manifest or a shell).
    model_config = SettingsConfigDict(
        env_prefix="SMARTTHUMB_", extra="ignore", env_ignore_empty=True
    )

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces whose ThumbnailJobs are run; unset: all.",
    )
    max_running: int = Field(
        10, ge=1, description="Most runner Jobs at once; the other ThumbnailJobs wait in order."
    )
    volume_claim: str | None = Field(
        None, description="PersistentVolumeClaim the runner pods mount at volume_path."
    )
    volume_host_path: str | None = Field(
        None,
        description="Instead of a claim: a node directory the runner pods mount (one-node "
        "clusters, kind).",
    )
    runner_image: str = Field(
        "smartthumb-runner:0.1.0", description="Image of the runner pods (Dockerfile.runner)."
    )
    fallback_image: str | None = Field(
        None,
        description="Image of the fallback pods (the light image will do); unset: runner_image.",
    )
    runner_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the runner pods."
    )
    runner_service_account: str | None = Field(
        None, description="ServiceAccount of the runner pods (no token is mounted)."
    )
    runner_node_selector: dict[str, str] = Field(
        default_factory=dict, description="JSON object: nodeSelector of every runner pod."
    )
    runner_tolerations: list[Toleration] = Field(
        default_factory=list, description="JSON list: tolerations of every runner pod."
    )
    runner_priority_class: str | None = Field(
        None,
        description="PriorityClass of the runner pods whose ThumbnailJob names none "
        "(runnerPod.priorityClassName).",
    )
    runner_job_ttl_s: int = Field(
        3600,
        ge=60,
        description=(
            "ttlSecondsAfterFinished of the runner Jobs: long enough for the operator to read "
            "their pods (they also go with their ThumbnailJob)."
        ),
    )
    max_interruptions: int = Field(
        3, ge=0, description="Evictions/preemptions of a run that are re-run; one more fails it."
    )
    # The runner pods' source limits: their CLI reads these same variables, which the
    # operator hands on to every pod. (Their FieldInfo as the default, which pydantic takes and
    # its types do not: cast to Any.)
    max_pixels: int = cast(Any, Limits.model_fields["max_pixels"])
    max_source_bytes: int = cast(Any, Limits.model_fields["max_source_bytes"])
    source_timeout_s: float = cast(Any, Limits.model_fields["source_timeout_s"])
    allowed_sources: Annotated[list[str], NoDecode] = cast(
        Any, Limits.model_fields["allowed_sources"]
    )
    allow_private_sources: Annotated[bool | list[IPvAnyNetwork], NoDecode] = cast(
        Any, Limits.model_fields["allow_private_sources"]
    )
    sweep_interval_s: float = Field(
        5, gt=0, description="How often due TTLs, webhook retries and missing Jobs are looked for."
    )
    lease_name: str = Field(
        "smartthumb-operator",
        description="Lease held by the replica that admits jobs, sends webhooks and expires jobs.",
    )
    lease_namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"),
        description="Namespace of that Lease (default: the operator pod's namespace).",
    )
    lease_duration_s: int = Field(
        15, ge=3, description="Seconds after which a silent leader's Lease is taken over."
    )
    identity: str = Field(
        default_factory=_default_identity, description="This replica's name in the Lease."
    )
    peering: str | None = Field(
        None,
        description="kopf peering object (KopfPeering) shared by the replicas; unset: standalone.",
    )
    priority: int = Field(
        default_factory=lambda: secrets.randbelow(2**31 - 1) + 1,
        description=(
            "kopf peering priority: the highest replica is active. Unset: a random number, so "
            "the replicas of one Deployment never tie (kopf pauses all of equal priority)."
        ),
    )
    liveness_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz (kopf's).")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Port of /metrics; 0: off.")
    public_url: str | None = Field(
        None,
        description="Base URL of the smartthumb API: webhooks then carry job_url and image_url.",
    )
    # Read raw (NoDecode): the validator takes true/false, CIDRs or JSON. (Its FieldInfo as the
    # default, which pydantic takes and its types do not: cast to Any.)
    allow_private_webhooks: Annotated[bool | list[IPvAnyNetwork], NoDecode] = cast(
        Any, WebhookSettings.model_fields["allow_private_webhooks"]
    )

    _split = field_validator("namespaces", mode="before")(split_commas)

    def runner_env(self) -> dict[str, str]:
        """The runner pods' source limits, as the variables their CLI reads."""
        values = self.model_dump(include=set(Limits.model_fields))
        return {env_name(name): _env_text(value) for name, value in values.items()}

    @field_validator("runner_node_selector", "runner_tolerations", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_volume(self) -> OperatorSettings:
        if self.storage == "s3":
            return self
        if (self.volume_claim is None) == (self.volume_host_path is None):
            raise ValueError(
                "set exactly one of SMARTTHUMB_VOLUME_CLAIM (a PersistentVolumeClaim) and "
                "SMARTTHUMB_VOLUME_HOST_PATH (a node directory): the runner pods mount it"
            )
        return self

    def policy(self, ttl_s: float) -> LifecyclePolicy:
        return self.lifecycle_policy(ttl_s, self.max_interruptions)


class KubernetesBackendSettings(StorageSettings, BaseSettings):
    """Settings of the API's Kubernetes backend (SMARTTHUMB_BACKEND=kubernetes), environment
    prefix SMARTTHUMB_. The operator's settings decide how the jobs then run."""

    model_config = SettingsConfigDict(
        env_prefix="SMARTTHUMB_", extra="ignore", env_ignore_empty=True
    )

    namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"),
        description="Namespace the API creates its ThumbnailJobs in (default: its pod's).",
    )
    queue_capacity: int = Field(
        1000,
        ge=1,
        description="Most ThumbnailJobs waiting in the namespace; past it submits get 429.",
    )
    max_running: int = Field(
        OperatorSettings.model_fields["max_running"].default,
        ge=1,
        description="The operator's SMARTTHUMB_MAX_RUNNING, shown as `workers` in /health.",
    )
    ttl_s: int = Field(
        7200,
        gt=0,
        le=30 * 86400,
        description="ttlSecondsAfterFinished of the ThumbnailJobs the API creates.",
    )
    job_timeout_s: int = Field(
        1800, gt=0, le=86400, description="timeoutSeconds of the ThumbnailJobs the API creates."
    )
    s3_redirect: bool = Field(
        False,
        description="With storage `s3`: GET /job/{id}/image (no conversion) and "
        "/jobs/{id}/download answer 307 to a presigned URL instead of streaming the image.",
    )
    cache_dir: Path = Field(
        Path("/tmp/smartthumb-api"),
        description="With storage `s3`: the API's copies of thumbnails it serves, and their "
        "format/width variants (each job's folder goes when the job does).",
    )
    # Read raw (NoDecode): the validator takes true/false, CIDRs or JSON. (Its FieldInfo as the
    # default, which pydantic takes and its types do not: cast to Any.)
    allow_private_webhooks: Annotated[bool | list[IPvAnyNetwork], NoDecode] = cast(
        Any, WebhookSettings.model_fields["allow_private_webhooks"]
    )

    _parse_allowed = field_validator("allow_private_webhooks", mode="before")(parse_allow_private)
