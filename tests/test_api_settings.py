"""The API's and each backend's settings, read from SMARTTHUMB_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import BackendKind
from smartthumb.operator.kube.settings import KubernetesBackendSettings
from smartthumb.operator.local import EngineSettings


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMARTTHUMB_API_TOKENS", " alpha, beta ,,")
    monkeypatch.setenv("SMARTTHUMB_PORT", "9000")
    monkeypatch.setenv("SMARTTHUMB_BACKEND", "kubernetes")
    monkeypatch.setenv("SMARTTHUMB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMARTTHUMB_WORKERS", "3")
    monkeypatch.setenv("SMARTTHUMB_ALLOW_PRIVATE_WEBHOOKS", '["10.0.0.0/8"]')
    settings = ApiSettings()
    assert settings.api_tokens == ["alpha", "beta"] and settings.port == 9000
    assert settings.backend is BackendKind.kubernetes
    engine = EngineSettings()
    assert engine.data_dir == tmp_path and engine.workers == 3
    assert isinstance(engine.allow_private_webhooks, list)
    assert [str(network) for network in engine.allow_private_webhooks] == ["10.0.0.0/8"]
    kube = KubernetesBackendSettings()
    assert isinstance(kube.allow_private_webhooks, list)
    assert [str(network) for network in kube.allow_private_webhooks] == ["10.0.0.0/8"]


def test_each_mode_has_only_its_own_settings() -> None:
    """Local-only knobs (workers, memory limits, the data folder) are not the API's, nor the
    Kubernetes backend's: there the operator runs the jobs."""
    local_only = {"workers", "memory_limit_mb", "data_dir", "worker_max_runs"}
    assert local_only <= set(EngineSettings.model_fields)
    assert not local_only & set(ApiSettings.model_fields)
    assert not local_only & set(KubernetesBackendSettings.model_fields)


def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTTHUMB_BACKEND", "nomad")
    with pytest.raises(ValueError, match="'local' or 'kubernetes'"):
        ApiSettings()


def test_public_url_defaults_to_this_server_for_webhooks() -> None:
    settings = ApiSettings(host="0.0.0.0", port=9000, allow_anonymous=True)
    assert not settings.public_url_configured
    assert settings.webhook_public_url() == "http://127.0.0.1:9000"
    behind_proxy = ApiSettings(public_url="https://thumbs.example.com/")
    assert behind_proxy.public_url_configured
    assert behind_proxy.webhook_public_url() == "https://thumbs.example.com"


def test_a_network_listener_needs_tokens_or_an_explicit_opt_in() -> None:
    for exposed in ("0.0.0.0", "::", "192.0.2.7", "thumbs.internal"):
        with pytest.raises(ValueError, match="SMARTTHUMB_ALLOW_ANONYMOUS=true"):
            ApiSettings(host=exposed)
        assert ApiSettings(host=exposed, api_tokens="secret").api_tokens == ["secret"]
        assert ApiSettings(host=exposed, allow_anonymous=True).allow_anonymous
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert ApiSettings(host=loopback).loopback_only


def test_smartthumb_api_refuses_an_open_network_listener(tmp_path: Path) -> None:
    """One line on stderr and exit code 2, before anything listens or is written."""
    env = {
        **os.environ,
        "SMARTTHUMB_HOST": "0.0.0.0",
        "SMARTTHUMB_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("SMARTTHUMB_API_TOKENS", None)
    env.pop("SMARTTHUMB_ALLOW_ANONYMOUS", None)
    api = Path(sys.executable).with_name("smartthumb-api")
    done = subprocess.run([api], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smartthumb-api: SMARTTHUMB_HOST=0.0.0.0")
    assert not (tmp_path / "data").exists()


def test_every_field_is_documented() -> None:
    for model in (ApiSettings, EngineSettings, KubernetesBackendSettings):
        for name, field in model.model_fields.items():
            assert field.description, (model.__name__, name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("", False),
        ("10.0.0.0/8", ["10.0.0.0/8"]),
        ("10.0.0.0/8, 192.168.0.0/16", ["10.0.0.0/8", "192.168.0.0/16"]),
        ('["10.0.0.0/8", "fd00::/8"]', ["10.0.0.0/8", "fd00::/8"]),
    ],
)
def test_allow_private_webhooks_takes_a_bool_cidrs_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool | list[str]
) -> None:
    monkeypatch.setenv("SMARTTHUMB_ALLOW_PRIVATE_WEBHOOKS", value)
    allowed = EngineSettings().allow_private_webhooks
    if isinstance(expected, bool):
        assert allowed is expected
    else:
        assert isinstance(allowed, list)
        assert [str(network) for network in allowed] == expected


@pytest.mark.parametrize("value", ["10.0.0.0/33", "sometimes", '["10.0.0.0/8"'])
def test_a_bad_allow_private_webhooks_fails_at_startup(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SMARTTHUMB_ALLOW_PRIVATE_WEBHOOKS", value)
    with pytest.raises(ValueError, match="allow_private_webhooks"):
        EngineSettings()
