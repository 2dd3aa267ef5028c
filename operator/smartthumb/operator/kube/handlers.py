"""The kopf handlers: small, stateless, idempotent. Each hands what it saw to the Reconciler
(which decides through the lifecycle state machine) and nudges the sweep.

No finalizers anywhere: no delete handlers, timers or daemons on ThumbnailJobs, so deleting one
never waits for the operator; runner Jobs are owned and go with it (garbage collection).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from smartthumb.operator.kube.childjob import CHILD_SELECTOR, MANAGED_BY, OPERATOR
from smartthumb.operator.kube.resource import GROUP, PLURAL, VERSION
from smartthumb.operator.kube.runtime import Operator, client_configuration, connection_info


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return connection_info(client_configuration())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Only the operator's own Jobs are streamed from the API server, not every Job.
    settings.watching.label_selectors["batch", "v1", "jobs"] = CHILD_SELECTOR
    settings.execution.max_workers = 8
    settings.posting.level = logging.WARNING  # kopf's own Events: problems only
    try:
        memo.operator = Operator.from_environment()
    except ValueError as error:  # bad settings: retrying cannot help
        raise kopf.PermanentError(str(error)) from error
    memo.operator.start()


@kopf.on.cleanup()
def shut_down(memo: kopf.Memo, **_: Any) -> None:
    memo.operator.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def thumbnailjob_seen(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED":
        memo.operator.reconciler.accept(_plain(body))


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: OPERATOR})
def runner_job_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED":
        memo.operator.reconciler.observe_child(_plain(body))


@kopf.on.probe(id="sweep")
def sweep_health(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    operator: Operator = memo.operator
    return operator.health()


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's read-only view as the plain JSON the reconciler reads (its values are raw)."""
    return dict(body)
