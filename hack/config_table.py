"""Print the README's configuration tables from the settings models (the one source of truth):
the API, its two backends (local mode, Kubernetes), the runner, then the operator.

    .venv/bin/python hack/config_table.py
tests/test_readme.py fails when README.md's tables differ from this output.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.kube.settings import KubernetesBackendSettings, OperatorSettings
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.runner.limits import Limits

# Read by the runner process itself besides its Limits.
RUNNER_VARIABLES = [
    (
        "SMARTTHUMB_MODEL_DIR",
        "`<venv>/share/smartthumb/models`",
        "Where the runner reads detector models from.",
    ),
    (
        "THUMBNAIL_YOLO_MODEL",
        "unset",
        "Path to ultralytics YOLO weights (optional `yolo` extra): people it finds stay in frame.",
    ),
]


# Fields whose default is computed at start-up, described in words.
COMPUTED_DEFAULTS = {
    "workers": "number of CPUs",
    "api_processes": "number of CPUs",
    "api_tokens": "unset (no auth)",
    "public_url": "unset",
    "namespaces": "unset (all)",
    "lease_namespace": "`$POD_NAMESPACE`, else `default`",
    "identity": "`$POD_NAME`, else host-pid",
    "runner_node_selector": "`{}`",
    "runner_tolerations": "`[]`",
    "namespace": "`$POD_NAMESPACE`, else `default`",
    "priority": "random",
}
SHOWN_ELSEWHERE: dict[type[BaseModel], set[str]] = {EngineSettings: {"public_url"}}
"""Fields another table already lists under the same variable (the API hands it over)."""


def _default(name: str, field: FieldInfo) -> str:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    if field.default is None or field.default_factory is list:
        return "unset"
    value = field.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    return f"`{value}`"


def table(settings: type[BaseModel], extra: list[tuple[str, str, str]]) -> str:
    # Limits is a plain model (the runner is a CLI): its variables carry the same prefix.
    prefix = str(settings.model_config.get("env_prefix", "SMARTTHUMB_"))
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        if name in SHOWN_ELSEWHERE.get(settings, set()):
            continue
        description = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `{prefix.upper()}{name.upper()}` | {_default(name, field)} | {description} |"
        )
    for name, default, description in extra:
        shown = default if default.startswith("`") or default == "unset" else f"`{default}`"
        rows.append(f"| `{name}` | {shown} | {description} |")
    return "\n".join(rows)


def tables() -> str:
    return "\n\n".join(
        [
            "#### `smartthumb-api`",
            table(ApiSettings, []),
            "#### Local mode (`SMARTTHUMB_BACKEND=local`, the default)",
            table(EngineSettings, []),
            "#### The runner (local mode's runner processes; on Kubernetes the operator hands these to its pods)",
            table(Limits, RUNNER_VARIABLES),
            "#### Kubernetes mode (`SMARTTHUMB_BACKEND=kubernetes`)",
            table(KubernetesBackendSettings, []),
            "#### `smartthumb-operator`",
            table(OperatorSettings, []),
        ]
    )


if __name__ == "__main__":
    print(tables())
