"""One local engine, several API processes: the engine's process serves it on a Unix socket
(EngineServer); each API process holds a RemoteEngine, a Backend that keeps a copy of every
job in memory as the engine pushes each change, so status polls, queue positions and
long-polls never leave the process, while submits and cancels are one request to the engine.

The engine stays the only one that runs jobs and writes the store: the guarantees of the
local engine (a restart loses nothing, no job runs twice) are its own, whatever the number
of API processes. Long-polls wake when the push of their job's change arrives.

Messages are multiprocessing.connection frames (length-prefixed) on the socket, which only
the data directory's owner can open. Each starts with a kind byte:
  to the engine:  Q + {"n", "op", ...} (orjson), then one frame per uploaded input's bytes;
  from it:        H + hello {"ttl_s", "capacity", "workers"}, J + a Job (JSON), G + a deleted
                  job's id, S once the first copy of every job is sent, R + {"n", ...} answers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import REGISTRY, generate_latest
from smartthumb.operator.backend import (
    BackendStartError,
    InputError,
    InputFile,
    QueueFullError,
    UnknownJobError,
    WebhookRefusedError,
)
from smartthumb.operator.jobindex import JobIndex
from smartthumb.operator.local.engine import LocalEngine, finished_output
from smartthumb.operator.models import Job, QueueStats
from smartthumb.operator.waiters import Waiters
from smartthumb.runner.spec import ThumbnailSpec

log = logging.getLogger(__name__)

SOCKET_NAME = "engine.sock"
"""In the data directory."""
REQUEST_THREADS = 8
"""Requests the engine's process carries out at once (a submit writes files and a row)."""
CONNECT_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 60.0
ASK_TIMEOUT_S = 2.0
"""For a job this process has not heard of: the asking blocks a status poll's event loop."""
UNKNOWN_REMEMBERED = 10_000
"""Job ids the engine said it does not have, remembered so that a client polling a wrong or
expired id costs one request, not one per poll. Its answer is final: an id is the engine's
random choice, known to a client only once the engine holds the job."""
_JOB_ID = re.compile(r"[0-9a-f]{32}")
"""What the engine names jobs (secrets.token_hex(16), and uuid4().hex before it): anything
else is unknown without asking."""

_ERRORS: dict[str, type[Exception]] = {
    error.__name__: error
    for error in (InputError, WebhookRefusedError, QueueFullError, UnknownJobError)
}
"""What a request may raise, by name: raised again as such in the API process."""


def _frame(kind: bytes, content: object) -> bytes:
    return kind + orjson.dumps(content)


def _hang_up(connection: Connection) -> None:
    """End the connection under a thread blocked reading it (which then reads EOF): closing
    it there would pull the descriptor from under that read."""
    with contextlib.suppress(OSError):
        socket.socket(fileno=os.dup(connection.fileno())).shutdown(socket.SHUT_RDWR)


class _Peer:
    """One API process, seen from the engine's: news goes out through a queue and a thread
    of its own, so a slow reader never holds up the engine."""

    def __init__(self, connection: Connection, message: Callable[[str, Job | None], bytes]) -> None:
        self.connection = connection
        self._message = message
        self.outgoing: queue.Queue[bytes | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="smartthumb-peer", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        while (message := self.outgoing.get()) is not None:
            try:
                self.connection.send_bytes(message)
            except OSError:
                return  # gone: its reader ends too

    def changed(self, job_id: str, job: Job | None) -> None:
        """The engine's news (its lock held): queued, in the order the changes were made."""
        self.outgoing.put(self._message(job_id, job))

    def close(self) -> None:
        self.outgoing.put(None)
        _hang_up(self.connection)


class EngineServer:
    """Serves `engine` to the API processes on `path` (a Unix socket)."""

    def __init__(self, engine: LocalEngine, path: Path) -> None:
        self._engine = engine
        self._path = path
        path.unlink(missing_ok=True)  # left by a process that died; the data dir lock is ours
        self._listener = Listener(str(path), "AF_UNIX")
        path.chmod(0o600)
        self._peers: list[_Peer] = []
        self._lock = threading.Lock()
        self._last: tuple[str, int | None, bytes] = ("", None, b"")
        """The last change's message: every peer is sent the same bytes, made once."""
        self._requests = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="smartthumb-rpc")
        self._closed = False
        self._accepting = threading.Thread(
            target=self._accept, name="smartthumb-engine-server", daemon=True
        )

    def start(self) -> None:
        self._accepting.start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            peers, self._peers = self._peers, []
        for peer in peers:
            self._engine.unfollow(peer.changed)
            peer.close()
        self._requests.shutdown(wait=True, cancel_futures=True)
        self._path.unlink(missing_ok=True)

    def _message(self, job_id: str, job: Job | None) -> bytes:
        """What tells a peer of the change (called with the engine's lock held)."""
        if job is None:
            return b"G" + job_id.encode()
        last_id, revision, message = self._last
        if last_id != job_id or revision != job.revision or revision is None:
            message = b"J" + job.model_dump_json().encode()
            self._last = (job_id, job.revision, message)
        return message

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(connection,), name="smartthumb-peer-reader", daemon=True
            ).start()

    def _serve(self, connection: Connection) -> None:
        peer = _Peer(connection, self._message)
        settings = self._engine.settings
        hello = {"ttl_s": settings.ttl_s, "capacity": settings.queue_capacity}
        peer.outgoing.put(_frame(b"H", {**hello, "workers": settings.workers}))
        with self._lock:
            self._peers.append(peer)

        # The copy of every job, then each change after it: the engine queues both under
        # its lock, so no change is missed or sent before the copy.
        def copy(jobs: list[Job]) -> None:
            for job in jobs:
                peer.changed(job.id, job)

        self._engine.follow(peer.changed, copy)
        peer.outgoing.put(b"S")
        try:
            while True:
                message = connection.recv_bytes()
                request = orjson.loads(message[1:])
                blobs = [connection.recv_bytes() for _ in range(request.get("blobs", 0))]
                self._requests.submit(self._answer, peer, request, blobs)
        except (EOFError, OSError):
            pass  # the API process has gone
        finally:
            self._engine.unfollow(peer.changed)
            with self._lock:
                if peer in self._peers:
                    self._peers.remove(peer)
            peer.close()
            connection.close()

    def _answer(self, peer: _Peer, request: dict[str, Any], blobs: list[bytes]) -> None:
        try:
            answer = {"n": request["n"], **self._carry_out(request, blobs)}
        except Exception as error:
            if type(error).__name__ not in _ERRORS:
                log.exception("request %s from an API process failed", request.get("op"))
            answer = {"n": request["n"], "error": type(error).__name__, "message": str(error)}
        peer.outgoing.put(_frame(b"R", answer))

    def _carry_out(self, request: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
        engine, op = self._engine, request["op"]
        if op in ("submit", "submit_batch"):
            spec = ThumbnailSpec.model_validate(request["spec"])
            inputs = [
                InputFile(name=item["name"], url=item.get("url"), data=None)
                if item.get("url") is not None
                else InputFile(name=item["name"], data=blobs[item["blob"]])
                for item in request["inputs"]
            ]
            if op == "submit":
                job = engine.submit(
                    spec,
                    inputs,
                    webhook_url=request.get("webhook_url"),
                    batch_id=request.get("batch_id"),
                    api_url=request.get("api_url"),
                )
                return {"jobs": [job.model_dump(mode="json")]}
            jobs = engine.submit_batch(spec, inputs, request["batch_id"])
            return {"jobs": [one.model_dump(mode="json") for one in jobs]}
        if op == "get":
            found = engine.get(request["id"])
            return {"jobs": [found.model_dump(mode="json")] if found is not None else []}
        if op == "cancel":
            engine.cancel(request["id"])
            return {}
        if op == "unready":
            return {"reason": engine.unready_reason()}
        if op == "metrics":  # the engine's counters live in this process
            return {"text": generate_latest(REGISTRY).decode()}
        raise ValueError(f"unknown request {op!r}")


class RemoteEngine:
    submits_locally = False  # a request to the engine's process
    """The Backend of an API process: the engine of another process (EngineServer)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / SOCKET_NAME
        self._jobs_dir = data_dir / "jobs"
        self._lock = threading.RLock()
        self._index = JobIndex()
        self._unknown: OrderedDict[str, None] = OrderedDict()  # UNKNOWN_REMEMBERED, oldest first
        self._waiters = Waiters(self._lock)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._numbers = itertools.count(1)
        self._send_lock = threading.Lock()
        self._synced = threading.Event()
        self._hello: dict[str, Any] = {}
        self._connection: Connection | None = None
        self._stopping = False
        self._reader = threading.Thread(target=self._read, name="smartthumb-remote", daemon=True)
        self.ttl_s = 0.0

    def start(self) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                self._connection = Client(str(self._path), "AF_UNIX")
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise BackendStartError(
                        f"the engine's socket {self._path} does not answer: {error}"
                    ) from None
                time.sleep(0.05)
        self._reader.start()
        if not self._synced.wait(CONNECT_TIMEOUT_S):
            raise BackendStartError("the engine sent no copy of its jobs")

    def stop(self, graceful: bool = True) -> None:
        self._stopping = True
        if self._connection is not None:
            _hang_up(self._connection)
            self._reader.join(timeout=5)
            self._connection.close()

    def healthy(self) -> bool:
        return self._reader.is_alive()

    def metrics(self) -> bytes:
        """The engine process's Prometheus metrics (job counters, queue figures)."""
        return str(self._request({"op": "metrics"})["text"]).encode()

    def unready_reason(self) -> str | None:
        if not self.healthy():
            return "the engine's process is not reachable"
        reason: str | None = self._request({"op": "unready"}).get("reason")
        return reason

    # --- the engine's news ----------------------------------------------------------------------

    def _read(self) -> None:
        assert self._connection is not None
        try:
            while True:
                message = self._connection.recv_bytes()
                kind, content = message[:1], message[1:]
                if kind == b"J":
                    job = Job.model_validate_json(content)
                    with self._lock:
                        self._index.put(job)
                        self._waiters.notify(job.id)
                elif kind == b"G":
                    job_id = content.decode()
                    with self._lock:
                        self._index.remove(job_id)
                        self._waiters.notify(job_id)
                elif kind == b"R":
                    answer = orjson.loads(content)
                    future = self._pending.pop(answer["n"], None)
                    if future is not None:
                        future.set_result(answer)
                elif kind == b"H":
                    self._hello = orjson.loads(content)
                    self.ttl_s = float(self._hello["ttl_s"])
                elif kind == b"S":
                    self._synced.set()
        except (EOFError, OSError):
            if not self._stopping:
                log.warning("the connection to the engine's process is closed")
        finally:
            for future in list(self._pending.values()):
                future.set_exception(BackendStartError("the engine's process is gone"))
            self._pending.clear()

    def _request(
        self,
        request: dict[str, Any],
        blobs: Sequence[bytes] = (),
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> dict[str, Any]:
        if self._connection is None or not self._reader.is_alive():
            raise BackendStartError("the engine's process is not reachable")
        number = next(self._numbers)
        future: Future[dict[str, Any]] = Future()
        self._pending[number] = future
        with self._send_lock:
            self._connection.send_bytes(_frame(b"Q", {**request, "n": number, "blobs": len(blobs)}))
            for blob in blobs:
                self._connection.send_bytes(blob)
        try:
            answer = future.result(timeout)
        finally:
            self._pending.pop(number, None)
        if "error" in answer:
            raise _ERRORS.get(answer["error"], RuntimeError)(answer["message"])
        return answer

    @staticmethod
    def _submitted(answer: dict[str, Any]) -> list[Job]:
        # The engine queued the news of these jobs to this connection before this answer, so
        # they are in the index already: this process reads its writes.
        return [Job.model_validate(job) for job in answer["jobs"]]

    # --- Backend --------------------------------------------------------------------------------

    def submit(
        self,
        spec: ThumbnailSpec,
        inputs: Sequence[InputFile],
        *,
        webhook_url: str | None = None,
        batch_id: str | None = None,
        api_url: str | None = None,
    ) -> Job:
        items, blobs = _inputs(inputs)
        request = {
            "op": "submit",
            "spec": spec.model_dump(mode="json"),
            "inputs": items,
            "webhook_url": webhook_url,
            "batch_id": batch_id,
            "api_url": api_url,
        }
        return self._submitted(self._request(request, blobs))[0]

    def submit_batch(
        self, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
    ) -> list[Job]:
        items, blobs = _inputs(inputs)
        request = {
            "op": "submit_batch",
            "spec": spec.model_dump(mode="json"),
            "inputs": items,
            "batch_id": batch_id,
        }
        return self._submitted(self._request(request, blobs))

    def get(self, job_id: str) -> Job | None:
        """From the copy; a job not in it is asked for (made through another API process a
        moment ago, its news not read yet; or unknown): a request, but only then, and only
        once for an id the engine does not have."""
        with self._lock:
            job = self._index.get(job_id)
            if job is not None:
                return self._index.shown(job)
            if job_id in self._unknown:
                return None
        if _JOB_ID.fullmatch(job_id) is None:
            return None
        jobs = self._request({"op": "get", "id": job_id}, timeout=ASK_TIMEOUT_S)["jobs"]
        if jobs:
            return Job.model_validate(jobs[0])
        with self._lock:
            self._unknown[job_id] = None
            if len(self._unknown) > UNKNOWN_REMEMBERED:
                self._unknown.popitem(last=False)
        return None

    def wait(self, job_id: str, timeout: float) -> Job:
        return self._waiters.wait(job_id, lambda: self.get(job_id), timeout)

    def subscribe(self, job_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        return self._waiters.subscribe(job_id, changed)

    def cancel(self, job_id: str) -> None:
        self._request({"op": "cancel", "id": job_id})

    def list_batch(self, batch_id: str) -> list[Job]:
        with self._lock:
            return self._index.shown_batch(batch_id)

    def output_file(self, job: Job) -> Path | None:
        return finished_output(self._jobs_dir, job)

    def output_url(self, job: Job) -> str | None:
        return None  # the API serves the file

    def stats(self) -> QueueStats:
        with self._lock:
            return self._index.stats(
                capacity=self._hello.get("capacity", 0), workers=self._hello.get("workers", 0)
            )


def _inputs(inputs: Sequence[InputFile]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The inputs as sent: names and URLs in the request, bytes in frames of their own."""
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for item in inputs:
        if item.url is not None:
            items.append({"name": item.name, "url": item.url})
        else:
            items.append({"name": item.name, "blob": len(blobs)})
            blobs.append(item.data or b"")
    return items, blobs
