"""The ThumbnailJob custom resource: its spec and status, kubebuilder style.

These models are the resource's one source of truth. The CRD's OpenAPI schema (and so
`kubectl explain`) is generated from them by `smartthumb.operator.kube.crd`, every field is
documented once, here, and the CEL rules the API server enforces sit on the models they guard.
The operator parses what it reads with the same models.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from smartthumb.runner.limits import MAX_INPUTS
from smartthumb.runner.spec import (
    ASPECT_PATTERN,
    COMPLETED_SIDE_OUT_OF_RANGE,
    MAX_SIDE,
    MIN_SIDE,
    PAIR_SIDE_TOO_SHORT,
    InputReport,
    Mode,
    OutputFormat,
    ThumbnailSpec,
)

GROUP = "smartthumb.dev"
VERSION = "v1alpha1"
KIND = "ThumbnailJob"
PLURAL = "thumbnailjobs"
SHORT_NAMES = ["tj"]
CATEGORIES = ["smartthumb"]

MAX_SOURCES = MAX_INPUTS  # what one runner accepts

_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
# The status is read back too: a field some other tool added must not make it unreadable.
_STATUS = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _rule(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    """One CEL rule (`x-kubernetes-validations` entry) with the message people see."""
    return {"rule": rule, "message": message, **extra}


def _cel(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


Quantity = Annotated[
    str,
    StringConstraints(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"),
    Field(json_schema_extra=_cel(_rule("isQuantity(self)", "must be a quantity such as 512Mi"))),
]
CpuQuantity = Annotated[
    str,
    StringConstraints(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?m?$"),
    Field(json_schema_extra=_cel(_rule("isQuantity(self)", "must be a quantity such as 500m"))),
]
ShortString = Annotated[str, StringConstraints(max_length=253)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]
AnnotationValue = Annotated[str, StringConstraints(max_length=4096)]

QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1,
}  # fmt: skip


def quantity_bytes(quantity: str) -> int:
    """A memory quantity as bytes (the subset the schema's pattern admits)."""
    for suffix in sorted(QUANTITY_SUFFIXES, key=len, reverse=True):
        if suffix and quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * QUANTITY_SUFFIXES[suffix])
    return int(float(quantity))


def quantity_mib(quantity: str) -> int:
    """A memory quantity in whole MiB, rounded up (the lifecycle counts memory in MiB)."""
    return -(-quantity_bytes(quantity) // 2**20)


def _volume_path(what: str) -> Any:
    """A path relative to the shared volume: the same two rules for the API server (CEL,
    linear: split('/').exists(...) over 500 sources exceeds its cost budget) and the model."""
    relative = "must be relative to the shared volume's root"
    no_parent = f"must not contain '..': {what} stays inside the shared volume"

    def check(path: str) -> str:
        if path.startswith("/"):
            raise ValueError(relative)
        if ".." in path.split("/"):
            raise ValueError(no_parent)
        return path

    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=1024),
        AfterValidator(check),
        Field(
            json_schema_extra=_cel(
                _rule("!self.startsWith('/')", relative),
                _rule(
                    "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || "
                    "self.contains('/../'))",
                    no_parent,
                ),
            )
        ),
    ]


if TYPE_CHECKING:  # to a type checker a str; the rules are pydantic metadata, built at run time
    SourcePath = str
    OutputPath = str
else:
    SourcePath = _volume_path("a source")
    OutputPath = _volume_path("the output")


def mib_quantity(mib: int) -> str:
    """MiB as the quantity a person writes: 2Gi rather than 2048Mi."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


class S3Object(BaseModel):
    """An object in S3-compatible storage (SMARTTHUMB_STORAGE=s3): runner pods get a
    presigned URL for it, never credentials."""

    model_config = _CAMEL

    bucket: Annotated[
        str,
        StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"),
    ] = Field(description="Bucket name.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Object key."
    )


SOURCE_KINDS = "set exactly one of path, s3 and url"
URL_SCHEMES = "url must start with https:// or http://"


class Source(BaseModel):
    """One input image: a file on the shared volume, an object in S3-compatible storage, or
    an http(s) URL the runner fetches itself (through its SSRF guard, size cap and timeout;
    SMARTTHUMB_ALLOWED_SOURCES may limit the hosts)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_cel(
            _rule(
                "(has(self.path) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.url) ? 1 : 0) == 1",
                SOURCE_KINDS,
            )
        ),
    )

    path: SourcePath | None = Field(
        None,
        description=(
            "Path of the image relative to the shared volume's root. Paths that resolve "
            "outside the volume (`..`, absolute paths, symlinks leading out) are refused."
        ),
    )
    s3: S3Object | None = Field(None, description="An object in S3-compatible storage.")
    url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        None,
        description="An http(s) URL; loopback, private, link-local and metadata addresses "
        "are refused unless the operator allows them (SMARTTHUMB_ALLOW_PRIVATE_SOURCES).",
        json_schema_extra=_cel(
            _rule("self.startsWith('https://') || self.startsWith('http://')", URL_SCHEMES)
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if sum(value is not None for value in (self.path, self.s3, self.url)) != 1:
            raise ValueError(SOURCE_KINDS)
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(URL_SCHEMES)
        return self

    def shown(self) -> str:
        """How the source is named in status and messages (a URL without its query, which
        may carry a signature)."""
        if self.path is not None:
            return self.path
        if self.s3 is not None:
            return f"s3://{self.s3.bucket}/{self.s3.key}"
        return str(self.url).split("?", 1)[0]


class Resources(BaseModel):
    """Memory and CPU of the runner pods. A main run that is OOMKilled is retried with double
    the memory while that stays within maxMemory; then the light fallback runs with
    fallbackMemory."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_cel(
            # A malformed quantity is reported by its own field's rule; quantity() would fail
            # with a regular expression as the message.
            _rule(
                "!isQuantity(self.fallbackMemory) || !isQuantity(self.memory) || "
                "quantity(self.fallbackMemory).compareTo(quantity(self.memory)) <= 0",
                "fallbackMemory must not be larger than memory",
            ),
            _rule(
                "!has(self.maxMemory) || !isQuantity(self.memory) || "
                "!isQuantity(self.maxMemory) || "
                "quantity(self.memory).compareTo(quantity(self.maxMemory)) <= 0",
                "maxMemory must not be smaller than memory",
            ),
        ),
    )

    memory: Quantity = Field(
        "512Mi", description="Memory limit (and request) of the first main runner pod."
    )
    fallback_memory: Quantity = Field(
        "256Mi", description="Memory limit (and request) of the light fallback runner pod."
    )
    max_memory: Quantity | None = Field(
        None,
        description=(
            "Largest memory a main run is retried with after an OOM kill; unset: 4x memory. "
            "Equal to memory: no retries, straight to the fallback."
        ),
    )
    cpu: CpuQuantity = Field("500m", description="CPU request of a runner pod (no CPU limit).")

    @model_validator(mode="after")
    def _memory_goes_up(self) -> Resources:  # the CEL rules above, for the model's users
        if quantity_bytes(self.fallback_memory) > quantity_bytes(self.memory):
            raise ValueError("fallbackMemory must not be larger than memory")
        if self.max_memory is not None and quantity_bytes(self.memory) > quantity_bytes(
            self.max_memory
        ):
            raise ValueError("maxMemory must not be smaller than memory")
        return self

    def max_memory_mib(self) -> int:
        if self.max_memory is not None:
            return quantity_mib(self.max_memory)
        return 4 * quantity_mib(self.memory)


class SecretKeyRef(BaseModel):
    """A key of a Secret in the ThumbnailJob's namespace."""

    model_config = _CAMEL

    name: ShortString = Field(min_length=1, description="Name of the Secret.")
    key: ShortString = Field("secret", min_length=1, description="Key within the Secret.")


class Webhook(BaseModel):
    """Where to POST the completion event (Standard Webhooks headers)."""

    model_config = _CAMEL

    url: str = Field(
        max_length=2048,
        pattern=r"^https?://",
        description=(
            "http(s) URL that receives the completion event. Loopback, private, link-local "
            "and metadata addresses are refused unless the operator allows them."
        ),
    )
    secret_ref: SecretKeyRef | None = Field(
        None,
        description=(
            "Secret key holding the whsec_... signing key; the POST then carries a "
            "webhook-signature header. Unset: the operator's default key, if any."
        ),
    )


class TolerationOperator(str, Enum):
    exists = "Exists"
    equal = "Equal"


class Toleration(BaseModel):
    """A toleration of the runner pods (core/v1 Toleration)."""

    model_config = _CAMEL

    key: ShortString | None = Field(None, description="The taint key; empty: all keys.")
    operator: TolerationOperator | None = Field(None, description="Exists or Equal (default).")
    value: LabelValue | None = Field(None, description="The taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect; empty: all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="NoExecute: how long the pod stays bound after the taint appears."
    )


class RunnerPod(BaseModel):
    """What the runner pods get besides the operator's defaults: cost labels, sidecar
    opt-outs, node pools."""

    model_config = _CAMEL

    labels: dict[ShortString, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels added to the runner pods.",
    )
    annotations: dict[ShortString, AnnotationValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Annotations added to the runner pods.",
    )
    node_selector: dict[ShortString, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels the runner pods must run on (added to the operator's).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations of the runner pods (added to the operator's).",
    )
    priority_class_name: ShortString | None = Field(
        None, description="PriorityClass of the runner pods."
    )


def _scaled(side: str, numerator: str, denominator: str) -> str:
    """CEL of spec.scaled(): side * numerator / denominator rounded half up (CEL's int
    division truncates, as Python's // does for positive numbers)."""
    return f"(2 * self.{side} * {numerator} + {denominator}) / (2 * {denominator})"


def _side_in_range(side: str) -> str:
    return f"({MIN_SIDE} <= {side} && {side} <= {MAX_SIDE})"


_ASPECT_W = "int(self.aspect.split(':')[0])"
_ASPECT_H = "int(self.aspect.split(':')[1])"


class ThumbnailJobSpec(ThumbnailSpec):
    """What to make: the ThumbnailSpec fields (mode, width, height, ...) plus where the
    images are and how the runner pods run. Immutable once created."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_cel(
            _rule(
                "self == oldSelf", "spec is immutable: delete the ThumbnailJob and create it again"
            ),
            _rule(
                "self.mode != 'resize' || (has(self.width) && has(self.height))",
                "mode 'resize' needs both width and height",
            ),
            _rule(
                "self.mode != 'fit' || has(self.width) || has(self.height)",
                "mode 'fit' needs width or height",
            ),
            _rule(
                "self.mode != 'crop' || has(self.width) || has(self.height)",
                "mode 'crop' needs width and height, or one of them and aspect",
            ),
            _rule(
                "self.mode != 'crop' || (has(self.width) && has(self.height)) || has(self.aspect)",
                "mode 'crop' needs both width and height, or aspect with one",
            ),
            _rule("!has(self.aspect) || self.mode == 'crop'", "aspect applies to mode 'crop' only"),
            # Height only: the width is round(height * 16 / 9), as in pair_canvas().
            _rule(
                "self.mode != 'pair' || (has(self.width) ? self.width >= self.gap + 2 : "
                "!has(self.height) || (self.height * 16 + 4) / 9 >= self.gap + 2)",
                "pair canvas is too narrow for two panels and the gap",
            ),
            # A malformed aspect is reported by its own pattern; int() would fail first.
            _rule(
                "self.mode != 'crop' || (has(self.width) && has(self.height)) || "
                f"!has(self.aspect) || !self.aspect.matches('{ASPECT_PATTERN}') || "
                "(has(self.width) ? "
                f"{_side_in_range(_scaled('width', _ASPECT_H, _ASPECT_W))} : "
                f"{_side_in_range(_scaled('height', _ASPECT_W, _ASPECT_H))})",
                COMPLETED_SIDE_OUT_OF_RANGE,
            ),
            # round(width * 9 / 16) and round(height * 16 / 9), as in pair_canvas().
            _rule(
                "self.mode != 'pair' || has(self.width) == has(self.height) || "
                f"(has(self.width) ? (self.width * 9 + 8) / 16 >= {MIN_SIDE} : "
                f"(self.height * 16 + 4) / 9 >= {MIN_SIDE})",
                PAIR_SIDE_TOO_SHORT,
            ),
        ),
    )

    sources: list[Source] = Field(
        min_length=1,
        max_length=MAX_SOURCES,
        description="The input images, in order: the pages of a chapter, or one photo.",
    )
    output: OutputPath | None = Field(
        None,
        description=(
            "Where to write the thumbnail, relative to the shared volume's root; unset: "
            "smartthumb/<namespace>/<name>/thumbnail.<ext>. Deleted with the job at its TTL."
        ),
    )
    resources: Resources = Field(default_factory=Resources)
    timeout_seconds: int = Field(
        600,
        ge=1,
        le=86400,
        description="activeDeadlineSeconds of each runner Job: a run still going is stopped.",
    )
    ttl_seconds_after_finished: int = Field(
        3600,
        ge=0,
        le=30 * 86400,
        description=(
            "Seconds after the job finished when the ThumbnailJob, its Jobs and pods and its "
            "files on the volume are deleted (a webhook still being retried is given up)."
        ),
    )
    webhook: Webhook | None = Field(None, description="Completion webhook.")
    runner_pod: RunnerPod = Field(default_factory=RunnerPod)

    def thumbnail_spec(self) -> ThumbnailSpec:
        """The runner's part of the spec."""
        return ThumbnailSpec.model_validate(
            self.model_dump(include=set(ThumbnailSpec.model_fields))
        )


# --- status ------------------------------------------------------------------------------------


class Phase(str, Enum):
    queued = "Queued"
    running = "Running"
    succeeded = "Succeeded"
    failed = "Failed"
    expired = "Expired"


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(BaseModel):
    """A metav1.Condition."""

    model_config = _STATUS

    type: str = Field(max_length=316, description="Admitted, Running, FallbackUsed, ...")
    status: ConditionStatus
    reason: str = Field(max_length=1024, description="CamelCase reason for the last change.")
    message: str = Field("", max_length=32768, description="What happened, for people.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(None, description="The spec generation it saw.")


class Runner(str, Enum):
    main = "main"
    fallback = "fallback"


class Attempt(BaseModel):
    """One runner Job of the ThumbnailJob."""

    model_config = _STATUS

    attempt: int = Field(description="1, 2, ...")
    job_name: str = Field(description="The batch/v1 Job that ran it.")
    runner: Runner = Field(description="main, or the light fallback.")
    memory: str | None = Field(None, description="The memory limit it ran under.")
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = Field(
        None,
        description=(
            "Succeeded, OOMKilled, BadInput, DeadlineExceeded, Interrupted, Error; unset "
            "while it runs."
        ),
    )
    message: str | None = Field(None, description="The runner's one-line error, if any.")
    disrupted_pods: list[str] = Field(
        default_factory=list,
        description="Pods of this Job that were evicted or preempted and replaced.",
        exclude_if=lambda pods: not pods,
    )


class Result(BaseModel):
    """What the runner made (small: never the image)."""

    model_config = _STATUS

    output: str = Field(description="Path of the thumbnail on the shared volume.")
    format: OutputFormat
    width: int
    height: int
    bytes: int
    mode: Mode
    method: str = Field(description="What decided the crop, e.g. 'pair:face+saliency'.")
    selected: list[int] = Field(default_factory=list, description="The source indexes used.")
    fallback_used: bool = Field(False, description="The light fallback made it after an OOM.")
    worker_warning: str | None = Field(None, description="Why the fallback ran.")
    inputs: list[InputReport] = Field(
        default_factory=list,
        description="What the runner made of each source (only the selected ones when the "
        "full list did not fit its 4 KiB termination message).",
    )


class WebhookStatus(BaseModel):
    """Where the completion webhook's delivery stands."""

    model_config = _STATUS

    attempts: int = Field(0, description="POSTs made so far.")
    delivered: bool = Field(False, description="A 2xx answer was received.")
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(
        None, description="When the next POST is due; unset when delivered or given up."
    )


class ThumbnailJobStatus(BaseModel):
    """Where the ThumbnailJob stands; written by the operator only."""

    model_config = _STATUS

    phase: Phase = Field(Phase.queued, description="Queued, Running, Succeeded or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Admitted, Running, FallbackUsed, Succeeded, Failed (reason OutOfMemory, BadInput, "
            "DeadlineExceeded, InputNotFound, Interrupted, ...), WebhookDelivered."
        ),
    )
    observed_generation: int | None = Field(None, description="The spec generation acted on.")
    queue_position: int | None = Field(None, description="1 = next to run; only while queued.")
    attempts: list[Attempt] = Field(
        default_factory=list,
        description=(
            "Every runner Job, oldest first: bounded by the memory ladder, one fallback and "
            "the interruption limit."
        ),
    )
    interruptions: int = Field(0, description="Runs evicted, preempted or lost with a node.")
    fallback_reason: str | None = Field(None, description="Why the light fallback runs.")
    result: Result | None = None
    message: str | None = Field(None, description="Why the job failed, in one line.")
    failure_reason: str | None = Field(None, description="Why the job failed, in one word.")
    webhook: WebhookStatus | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(
        None, description="When the ThumbnailJob and everything it made are deleted."
    )
