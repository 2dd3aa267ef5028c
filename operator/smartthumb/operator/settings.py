"""Settings both backends share: how completion webhooks are signed, sent and retried."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic.networks import IPvAnyNetwork
from smartthumb.operator.lifecycle import LifecyclePolicy
from smartthumb.runner.limits import parse_allow_private
from standardwebhooks import Webhook


class WebhookSettings(BaseModel):
    """The webhook fields of EngineSettings and OperatorSettings."""

    webhook_secret: SecretStr | None = Field(
        None, description="whsec_... key: webhooks carry Standard Webhooks signatures when set."
    )
    webhook_timeout_s: float = Field(15, gt=0, description="Timeout of one webhook POST.")
    webhook_max_attempts: int = Field(6, ge=1, description="Webhook POSTs before giving up.")
    webhook_backoff_s: float = Field(
        5, gt=0, description="Delay before the first webhook retry; each next one is 4x longer."
    )
    webhook_backoff_max_s: float = Field(
        6 * 3600, gt=0, description="Longest delay between webhook retries (Retry-After too)."
    )
    allow_private_webhooks: bool | list[IPvAnyNetwork] = Field(
        False,
        description=(
            "Webhooks to loopback, private, link-local and other non-public addresses are "
            "refused; true allows them all, a list of CIDRs allows those ranges only."
        ),
    )

    _parse_allowed = field_validator("allow_private_webhooks", mode="before")(parse_allow_private)

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_usable(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            Webhook(secret.get_secret_value())  # raises on a malformed key
        return secret

    def lifecycle_policy(self, ttl_s: float, max_interruptions: int = 3) -> LifecyclePolicy:
        return LifecyclePolicy(
            ttl_s=ttl_s,
            max_interruptions=max_interruptions,
            webhook_max_attempts=self.webhook_max_attempts,
            webhook_backoff_s=self.webhook_backoff_s,
            webhook_backoff_max_s=self.webhook_backoff_max_s,
        )
