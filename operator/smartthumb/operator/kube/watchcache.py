"""The ThumbnailJobs of one namespace, kept current by one watch: the API's reads (status
polls, long-polls, batch lists, queue figures) never cost an API server request.

List, then watch from the list's resourceVersion (with bookmarks, so a resume after a
quiet spell starts from a recent version); a watch that ends is resumed from the last
version seen; 410 Gone (that version was compacted away), or any failure, means list again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from smartthumb.operator.kube.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

Obj = dict[str, Any]
WATCH_TIMEOUT_S = 300
"""Server-side end of one watch request; it is then resumed (a dead connection is noticed)."""
RETRY_PAUSE_S = 1.0
FORGOTTEN_KEPT = 100_000
"""uids of objects this process deleted that it remembers (about 40 bytes each)."""
"""After a failed list or watch (API server restarting, network): the next one may fail too."""


def _version(obj: Obj) -> int:
    return int(obj["metadata"].get("resourceVersion") or 0)


class ThumbnailJobCache:
    def __init__(
        self,
        custom: client.CustomObjectsApi,
        namespace: str,
        lock: threading.RLock,
        changed: Callable[[str], None],
    ) -> None:
        """`changed(name)` is called with `lock` held after the cached object `name` changed
        (created, updated, deleted)."""
        self._custom = custom
        self._namespace = namespace
        self._lock = lock
        self._changed = changed
        self._objects: dict[str, Obj] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        """uids this process deleted: no event or list of theirs may bring them back (a uid
        is never reused). The newest FORGOTTEN_KEPT are kept."""
        self._watch = watch.Watch()
        self._stopping = threading.Event()
        self.synced = threading.Event()
        """Set once the first list is in; cleared while the API server cannot be reached."""
        self.problem: str | None = "not listed yet"
        self._thread = threading.Thread(target=self._run, name="smartthumb-tj-watch", daemon=True)

    def start(self, timeout: float) -> None:
        """Start watching; wait up to `timeout` for the first list (readiness reports a
        cluster that does not answer, start-up does not fail on it)."""
        self._thread.start()
        self.synced.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        for _ in range(50):  # again until it ends: a watch may have begun after the first stop
            self._watch.stop()  # unblocks the read the watch thread sits in
            self._thread.join(timeout=0.2)
            if not self._thread.is_alive():
                return

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def get(self, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get(name)

    def objects(self) -> list[Obj]:
        with self._lock:
            return list(self._objects.values())

    def put(self, obj: Obj) -> None:
        """An object this process just wrote: read-your-writes before its watch event."""
        self._store(obj)

    def forget(self, name: str) -> None:
        """An object this process just deleted: gone for readers at once, not when the
        watch says so."""
        with self._lock:
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Out of the cache (the lock held), its uid kept: no late event of it (a watch event
        in flight, a list answered before the delete) brings it back."""
        obj = self._objects.pop(name, None)
        if obj is not None:
            self._tombstone(obj)
            self._changed(name)

    def _tombstone(self, obj: Obj) -> None:
        self._deleted[obj["metadata"].get("uid") or ""] = None
        while len(self._deleted) > FORGOTTEN_KEPT:
            self._deleted.popitem(last=False)

    # --- the watch thread ---------------------------------------------------------------------

    def _run(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._follow(version)
            except ApiException as error:
                if error.status == 410:
                    version = None  # compacted: list again
                    continue
                self._trouble(f"the API server answered {error.status} {error.reason}")
            except Exception as error:  # noqa: BLE001 - any failure: report, pause, retry
                if self._stopping.is_set():
                    return
                self._trouble(f"cannot reach the API server: {type(error).__name__}")
            # After a failure, list again rather than resume: whatever was missed meanwhile
            # (deletions included) is then seen.
            version = None
            self._stopping.wait(RETRY_PAUSE_S)

    def _trouble(self, problem: str) -> None:
        log.warning("ThumbnailJob watch: %s", problem)
        self.problem = problem
        self.synced.clear()

    def _list(self) -> str:
        listed = self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL)
        fresh = {obj["metadata"]["name"]: obj for obj in listed["items"]}
        with self._lock:
            for name in set(self._objects) - set(fresh):
                self._remove(name)
        for obj in fresh.values():
            self._store(obj)
        self.problem = None
        self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> str:
        """Apply watch events until the watch ends; the version to resume from."""
        stream = self._watch.stream(
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            # Not deserialize=False: the client then fails on ERROR events (410 Gone) with a
            # KeyError instead of raising ApiException. Custom objects stay dicts anyway.
        )
        for event in stream:  # an ERROR event (410 Gone, ...) is raised as ApiException
            kind, obj = event["type"], event["raw_object"]
            version = obj["metadata"].get("resourceVersion") or version
            if kind == "DELETED":
                self._drop(obj)
            elif kind in ("ADDED", "MODIFIED"):
                self._store(obj)
        return version

    def _store(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if obj["metadata"].get("uid") in self._deleted:
                return
            held = self._objects.get(name)
            # Same name, another uid: deleted and created again, keep the new one.
            if (
                held is not None
                and held["metadata"].get("uid") == obj["metadata"].get("uid")
                and _version(held) >= _version(obj)
            ):
                return  # a late event of a version already held
            self._objects[name] = obj
            self._changed(name)

    def _drop(self, obj: Obj) -> None:
        """A DELETED event: whether it or this process's forget() came first, the uid is
        kept (CI saw the event win, and a stale copy of the object come back after)."""
        name = obj["metadata"]["name"]
        with self._lock:
            held = self._objects.get(name)
            # Another uid held: the name was created again since; that one stays.
            if held is not None and held["metadata"].get("uid") == obj["metadata"].get("uid"):
                self._remove(name)
            else:
                self._tombstone(obj)
