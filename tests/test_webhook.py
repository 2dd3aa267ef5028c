"""Completion webhooks against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kubecluster import free_port
from smartthumb.operator.backend import WebhookRefusedError
from smartthumb.operator.lifecycle import WebhookResponse
from smartthumb.operator.local import LocalEngine
from smartthumb.operator.models import Job
from smartthumb.operator.webhooks import WebhookSender, parse_retry_after
from smartthumb.runner import netguard
from smartthumb.runner.netguard import (
    GuardedTransport,
    RefusedAddress,
    RefusedURL,
    address_allowed,
    check_url,
)
from standardwebhooks import Webhook
from test_engine_support import RESIZE, Receiver, jpeg_input, running_engine, settings, wait_until

SECRET = "whsec_" + base64.b64encode(b"smartthumb-test-secret-32-bytes!").decode()
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
FAST_RETRIES = {
    "allow_private_webhooks": LOOPBACK,
    "webhook_backoff_s": 0.2,
    "webhook_timeout_s": 5,
    "sweep_interval_s": 0.1,
}


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def settled(engine: LocalEngine, job_id: str) -> Job:
    """The job once its webhook is delivered or given up."""
    wait_until(
        lambda: (job := engine.get(job_id)).webhook.attempts and job.webhook.next_attempt_at is None
    )
    return engine.get(job_id)


def test_a_signed_webhook_is_delivered_once_with_the_job(tmp_path: Path, receiver: Receiver):
    with running_engine(
        tmp_path, webhook_secret=SECRET, public_url="https://thumbs.example/", **FAST_RETRIES
    ) as engine:
        job = engine.submit(RESIZE, [jpeg_input()], webhook_url=receiver.url)
        assert job.webhook.enabled and job.webhook.url == receiver.url
        delivered = settled(engine, job.id)
    request = receiver.wait_for(1)[0]
    assert len(receiver.requests) == 1
    assert delivered.webhook.delivered and delivered.webhook.attempts == 1
    assert delivered.webhook.last_status_code == 200
    payload = Webhook(SECRET).verify(request["body"], request["headers"])
    assert payload == receiver.payload()
    assert payload["event"] == "thumbnail.job.completed"
    assert payload["job_id"] == job.id and payload["status"] == "done" and payload["error"] is None
    assert payload["job_url"] == f"https://thumbs.example/job/{job.id}"
    assert payload["image_url"] == f"https://thumbs.example/job/{job.id}/image"
    assert payload["result"]["output"]["width"] == 200
    assert payload["timestamp"] == delivered.finished_at.isoformat()
    assert request["headers"]["webhook-id"] == f"msg_{job.id}"


def test_a_failed_job_is_reported_too(tmp_path: Path, receiver: Receiver):
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = engine.submit(
            RESIZE, [jpeg_input().model_copy(update={"data": b"garbage"})], webhook_url=receiver.url
        )
        settled(engine, job.id)
    payload = receiver.payload()
    assert payload["status"] == "failed" and payload["image_url"] is None and payload["error"]
    assert "webhook-signature" not in receiver.requests[0]["headers"]  # no secret configured


def test_receiver_down_then_up_gets_exactly_one_delivery(tmp_path: Path):
    port = free_port()
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = engine.submit(RESIZE, [jpeg_input()], webhook_url=f"http://127.0.0.1:{port}/hook")
        wait_until(lambda: engine.get(job.id).webhook.attempts >= 1)
        assert "ConnectError" in engine.get(job.id).webhook.last_error
        receiver = Receiver(port)
        try:
            delivered = settled(engine, job.id)
            assert delivered.webhook.delivered and delivered.webhook.attempts >= 2
            assert len(receiver.requests) == 1
        finally:
            receiver.close()


def test_a_pending_delivery_survives_a_restart_and_is_sent_once(tmp_path: Path):
    port = free_port()
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = engine.submit(RESIZE, [jpeg_input()], webhook_url=f"http://127.0.0.1:{port}/hook")
        wait_until(lambda: engine.get(job.id).webhook.attempts >= 1)
    receiver = Receiver(port)
    try:
        with running_engine(tmp_path, **FAST_RETRIES) as restarted:
            delivered = settled(restarted, job.id)
        assert delivered.webhook.delivered and len(receiver.requests) == 1
    finally:
        receiver.close()


def test_410_stops_the_deliveries(tmp_path: Path, receiver: Receiver):
    receiver.statuses = [(410, {})]
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = settled(engine, engine.submit(RESIZE, [jpeg_input()], webhook_url=receiver.url).id)
    assert job.webhook.last_status_code == 410 and not job.webhook.delivered
    assert job.webhook.attempts == 1 and len(receiver.requests) == 1


def test_a_redirect_is_a_failure_and_never_followed(tmp_path: Path, receiver: Receiver):
    receiver.statuses = [(302, {"location": "http://127.0.0.1:9/elsewhere"})]
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = settled(engine, engine.submit(RESIZE, [jpeg_input()], webhook_url=receiver.url).id)
    assert [request["status"] for request in receiver.requests] == [302, 200]
    assert job.webhook.delivered and job.webhook.attempts == 2


def test_retry_after_is_honoured(tmp_path: Path, receiver: Receiver):
    receiver.statuses = [(503, {"retry-after": "1"})]
    with running_engine(tmp_path, **FAST_RETRIES) as engine:
        job = engine.submit(RESIZE, [jpeg_input()], webhook_url=receiver.url)
        assert settled(engine, job.id).webhook.delivered
    first, second = receiver.wait_for(2)
    assert second["at"] - first["at"] >= 0.95  # not the 0.2 s backoff


def test_gives_up_after_the_configured_attempts(tmp_path: Path, receiver: Receiver):
    receiver.statuses = [(500, {}), (500, {})]
    with running_engine(tmp_path, webhook_max_attempts=2, **FAST_RETRIES) as engine:
        job = settled(engine, engine.submit(RESIZE, [jpeg_input()], webhook_url=receiver.url).id)
    assert job.webhook.attempts == 2 and not job.webhook.delivered
    assert job.webhook.last_error == "HTTP 500; gave up after 2 attempts"
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_addresses_are_refused_at_submit(tmp_path: Path, url: str):
    engine = LocalEngine(settings(tmp_path))
    try:
        with pytest.raises(WebhookRefusedError, match="webhook_url: .*non-public address"):
            engine.submit(RESIZE, [jpeg_input()], webhook_url=url)
        assert engine.stats().queued == 0
    finally:
        engine.stop()


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "not a url", "http:///path", "http://nonexistent.invalid/"]
)
def test_malformed_or_unresolvable_urls_are_refused(url: str):
    with pytest.raises(RefusedURL):
        check_url(url, allow=False)


def test_allowed_ranges_open_only_those_addresses():
    check_url("http://127.0.0.1:9/hook", allow=LOOPBACK)
    check_url("http://10.0.0.1/hook", allow=True)
    with pytest.raises(RefusedAddress):
        check_url("http://10.0.0.1/hook", allow=LOOPBACK)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("172.16.5.4", False),
        ("fe80::1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_pass_by_default(address: str, allowed: bool):
    assert address_allowed(ipaddress.ip_address(address), allow=False) is allowed


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 well-known prefix -> 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 -> 169.254.169.254 (metadata)
        "64:ff9b:1::808:808",  # local-use NAT64 prefix: never public
        "2002:7f00:1::",  # 6to4 -> 127.0.0.1
        "2002:a00:1::1",  # 6to4 -> 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "2001::1",  # Teredo
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, public server and client
    ],
)
def test_ipv6_addresses_embedding_ipv4_are_checked_as_ipv4(address: str):
    assert address_allowed(ipaddress.ip_address(address), allow=False) is False
    with pytest.raises(RefusedAddress, match="non-public address"):
        check_url(f"http://[{address}]/hook", allow=False)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_addresses_embedding_a_public_ipv4_pass(address: str):
    assert address_allowed(ipaddress.ip_address(address), allow=False) is True


def test_embedded_ipv4_follows_the_allowed_ranges():
    assert address_allowed(ipaddress.ip_address("64:ff9b::7f00:1"), allow=LOOPBACK)
    assert address_allowed(ipaddress.ip_address("::127.0.0.1"), allow=LOOPBACK)
    assert not address_allowed(ipaddress.ip_address("2002:a00:1::1"), allow=LOOPBACK)
    teredo = [ipaddress.ip_network("2001::/32")]
    assert address_allowed(ipaddress.ip_address("2001::1"), allow=teredo)


def test_the_connect_time_check_uses_the_resolved_address(receiver: Receiver):
    url = f"http://localhost:{receiver.port}/hooks/thumbnail"
    with (
        httpx.Client(transport=GuardedTransport(allow=False)) as client,
        pytest.raises(RefusedAddress),
    ):
        client.post(url, content=b"{}")
    with httpx.Client(transport=GuardedTransport(allow=LOOPBACK)) as client:
        assert client.post(url, content=b"{}").status_code == 200
    assert receiver.requests[0]["headers"]["Host"] == f"localhost:{receiver.port}"


def test_dns_rebinding_is_caught_at_connect_time(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
):
    # The name answers a public address when the job is submitted, loopback afterwards.
    answers = iter([[ipaddress.ip_address("93.184.216.34")]])
    lookups: list[str] = []

    def rebinding_resolve(
        host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        lookups.append(host)
        return next(answers, [ipaddress.ip_address("127.0.0.1")])

    monkeypatch.setattr(netguard, "resolve", rebinding_resolve)
    url = f"http://rebind.example.test:{receiver.port}/hook"
    with running_engine(tmp_path, sweep_interval_s=0.1) as engine:
        job = engine.submit(RESIZE, [jpeg_input()], webhook_url=url)  # public: accepted
        wait_until(lambda: engine.get(job.id).webhook.attempts >= 1)
        delivery = engine.get(job.id).webhook
    assert lookups[:2] == ["rebind.example.test", "rebind.example.test"]
    assert "127.0.0.1, a non-public address" in delivery.last_error
    assert not delivery.delivered and delivery.next_attempt_at is None  # refused for good
    assert receiver.requests == []  # nothing reached the loopback receiver


@contextmanager
def raw_receiver(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that reads the request and then runs `answer` on the
    connection (for misbehaving receivers http.server cannot play)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(65536)
            try:
                answer(connection)
            except OSError:
                pass  # the sender hung up, as it should
            stop.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=15)


def _trickle(text: bytes, interval: float = 0.1) -> Callable[[socket.socket], None]:
    def answer(connection: socket.socket) -> None:
        for index in range(len(text)):
            connection.sendall(text[index : index + 1])
            time.sleep(interval)

    return answer


def _deliver(tmp_path: Path, url: str, timeout_s: float) -> tuple[WebhookResponse, float]:
    with running_engine(tmp_path) as engine:
        job = engine.submit(RESIZE, [jpeg_input()])
        wait_until(lambda: engine.get(job.id).state.finished)
        job = engine.get(job.id)
    job.webhook.url = url
    sender = WebhookSender(
        public_url="http://127.0.0.1:8080", secret=None, timeout_s=timeout_s, allow_private=LOOPBACK
    )
    started = time.monotonic()
    try:
        return sender.deliver(job), time.monotonic() - started
    finally:
        sender.close()


def test_a_trickling_receiver_is_cut_off_at_the_deadline(tmp_path: Path):
    # One byte every 0.1 s: no single read ever waits the 1 s timeout, the whole would take 6 s.
    status_line = b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 60 + b"\r\n\r\n"
    with raw_receiver(_trickle(status_line)) as url:
        response, took = _deliver(tmp_path, url, timeout_s=1)
    assert 0.9 <= took < 2.5, took
    assert response.status_code is None and response.error == "no answer within 1 s in all"
    assert not response.permanent


def test_a_huge_response_body_is_never_read(tmp_path: Path):
    def endless(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000000\r\n\r\n")
        chunk = b"x" * 65536
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            connection.sendall(chunk)

    with raw_receiver(endless) as url:
        response, took = _deliver(tmp_path, url, timeout_s=5)
    assert response.status_code == 200 and response.error is None
    assert took < 2, took  # the status was enough: no 100 GB read, no deadline reached


def test_retry_after_parsing():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now) == 60
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
