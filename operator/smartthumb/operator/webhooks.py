"""The completion webhook: payload, Standard Webhooks signature, one delivery attempt.

Retries are decided by the lifecycle state machine; this module only makes one POST and
reports how it ended as a WebhookResponse event.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
from smartthumb.operator.lifecycle import WebhookResponse
from smartthumb.operator.models import Job, JobState
from smartthumb.operator.settings import WebhookSettings
from smartthumb.runner.netguard import AllowPrivate, GuardedTransport, RefusedURL
from standardwebhooks import Webhook

EVENT = "thumbnail.job.completed"


def job_urls(public_url: str, job_id: str) -> tuple[str, str]:
    """The job's status URL and image URL as clients see them."""
    job_url = f"{public_url.rstrip('/')}/job/{job_id}"
    return job_url, f"{job_url}/image"


def payload(job: Job, public_url: str | None) -> dict[str, Any]:
    """The body: the same bytes on every attempt, so the receiver can dedupe on webhook-id.
    The links start with the address the job was submitted to, else `public_url`; with
    neither (a ThumbnailJob applied to an operator with no API in front) they are null."""
    base = job.api_url or public_url
    job_url, image_url = job_urls(base, job.id) if base else (None, None)
    return {
        "event": EVENT,
        "job_id": job.id,
        "status": job.state.value,
        "job_url": job_url,
        "image_url": image_url if job.state is JobState.done else None,
        "result": job.result.model_dump(mode="json") if job.result else None,
        "error": job.error,
        "timestamp": job.finished_at.isoformat() if job.finished_at else None,
    }


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


class WebhookSender:
    def __init__(
        self,
        *,
        public_url: str | None,
        secret: str | None,
        timeout_s: float,
        allow_private: AllowPrivate,
    ) -> None:
        self._public_url = public_url
        self._signer = Webhook(secret) if secret else None
        self._timeout_s = timeout_s
        # Redirects are failures, never followed: a 3xx could point anywhere. No keep-alive:
        # each attempt opens its own connection, which the deadline watchdog can then cut.
        one_shot = httpx.Limits(max_keepalive_connections=0)
        self._client = httpx.Client(
            transport=GuardedTransport(allow_private, limits=one_shot),
            follow_redirects=False,
            timeout=timeout_s,
            headers={"user-agent": "smartthumb-webhook/1"},
        )

    @classmethod
    def from_settings(cls, settings: WebhookSettings, public_url: str | None) -> WebhookSender:
        secret = settings.webhook_secret
        return cls(
            public_url=public_url,
            secret=secret.get_secret_value() if secret else None,
            timeout_s=settings.webhook_timeout_s,
            allow_private=settings.allow_private_webhooks,
        )

    def close(self) -> None:
        self._client.close()

    def headers(
        self,
        job: Job,
        body: str,
        now: datetime,
        *,
        message_id: str | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        # One completion event per job: the id is stable across retries (and restarts).
        message_id = message_id or f"msg_{job.id}"
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        signer = Webhook(secret) if secret else self._signer
        if signer is not None:
            headers["webhook-signature"] = signer.sign(message_id, now, body)
        return headers

    def deliver(
        self, job: Job, *, message_id: str | None = None, secret: str | None = None
    ) -> WebhookResponse:
        """POST the completion event once, within timeout_s in all.

        httpx's timeout bounds each phase, so a receiver trickling a byte at a time would hold
        a sender thread for ever: a watchdog shuts the socket down at the deadline. Only the
        status line and headers are read; the body (which may be huge) never is.
        `message_id` and `secret` override the job-id-based webhook-id and the sender's key.
        """
        assert job.webhook.url is not None
        attempt = job.webhook.attempts + 1
        body = json.dumps(payload(job, self._public_url), separators=(",", ":"))
        now = datetime.now(UTC)
        deadline = _Deadline(self._timeout_s)
        try:
            with self._client.stream(
                "POST",
                job.webhook.url,
                content=body.encode(),
                headers=self.headers(job, body, now, message_id=message_id, secret=secret),
                extensions={"trace": deadline.trace},
            ) as response:
                return WebhookResponse(
                    attempt=attempt,
                    status_code=response.status_code,
                    retry_after_s=parse_retry_after(response.headers.get("retry-after"), now),
                )
        except RefusedURL as error:
            return WebhookResponse(attempt=attempt, error=str(error), permanent=True)
        except httpx.HTTPError as error:
            if deadline.expired:
                return WebhookResponse(
                    attempt=attempt, error=f"no answer within {self._timeout_s:g} s in all"
                )
            return WebhookResponse(
                attempt=attempt, error=f"{type(error).__name__}: {error}".rstrip(": ")
            )
        finally:
            deadline.cancel()


class _Deadline:
    """Shuts down the attempt's socket (learnt from httpcore's trace events) when time is up;
    the blocked read then fails at once."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # The TCP stream, then (https) the TLS stream that replaces it: keep the latest.
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            with self._lock:
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                if self.expired:
                    self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()
