"""`smartthumb-operator`: kopf running the handlers, configured by SMARTTHUMB_* variables."""

from __future__ import annotations

import sys

import kopf.cli
from smartthumb.operator.kube.settings import OperatorSettings

HANDLERS = "smartthumb.operator.kube.handlers"


def kopf_args(settings: OperatorSettings) -> list[str]:
    """`kopf run` arguments for these settings (the tests' KopfRunner uses them too)."""
    args = ["run", "-m", HANDLERS]
    if settings.namespaces:
        args += [f"--namespace={namespace}" for namespace in settings.namespaces]
    else:
        args.append("--all-namespaces")
    if settings.peering:
        args += [f"--peering={settings.peering}", f"--priority={settings.priority}"]
    else:
        args.append("--standalone")
    if settings.liveness_port:
        args.append(f"--liveness=http://0.0.0.0:{settings.liveness_port}/healthz")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        settings = OperatorSettings()
    except ValueError as error:  # one line, not a traceback: the settings are the user's
        print(
            f"smartthumb-operator: {error}".splitlines()[0] + " " + _first_problem(error),
            file=sys.stderr,
        )
        sys.exit(2)
    kopf.cli.main(args=[*kopf_args(settings), *(argv or sys.argv[1:])])


def _first_problem(error: ValueError) -> str:
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    return ": ".join(lines[:2])
