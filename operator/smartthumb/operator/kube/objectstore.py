"""S3-compatible object storage through obstore (the Rust object_store crate): a small
wheel with no Python dependencies, which keeps the light image light. Requests are signed by
the library, never by hand."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import obstore
from obstore.store import S3Store
from smartthumb.operator.kube.settings import StorageSettings

RETRY_TIMEOUT = timedelta(seconds=10)


class ObjectStore:
    def __init__(self, settings: StorageSettings) -> None:
        if settings.s3_bucket is None:
            raise ValueError("object storage needs SMARTTHUMB_S3_BUCKET")
        self.bucket = settings.s3_bucket
        self._settings = settings
        self._expiry = timedelta(seconds=settings.s3_url_expiry_s)
        self._stores: dict[str, S3Store] = {}

    def _store(self, bucket: str | None = None) -> S3Store:
        """One client per bucket (sources may name other buckets the credentials can read)."""
        name = bucket or self.bucket
        if name not in self._stores:
            settings = self._settings
            options: dict[str, object] = {}
            if settings.s3_endpoint is not None:
                options.update(endpoint=settings.s3_endpoint, virtual_hosted_style_request=False)
            if settings.s3_access_key_id is not None:
                options["access_key_id"] = settings.s3_access_key_id.get_secret_value()
            if settings.s3_secret_access_key is not None:
                options["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
            plain_http = (settings.s3_endpoint or "").startswith("http://")
            self._stores[name] = S3Store(
                name,
                region=settings.s3_region,
                # Bounded: an unreachable server must not hold a submit or a readiness probe
                # for the library's default three minutes of retries.
                client_options={
                    "allow_http": plain_http,
                    "connect_timeout": "5s",
                    "timeout": "60s",
                },
                retry_config={"max_retries": 2, "retry_timeout": RETRY_TIMEOUT},
                **options,  # type: ignore[arg-type]
            )
        return self._stores[name]

    def put(self, key: str, data: bytes) -> None:
        obstore.put(self._store(), key, data)

    def download(self, key: str, target: Path) -> bool:
        """The object into `target` (written whole, then renamed); False if there is none."""
        try:
            data = obstore.get(self._store(), key).bytes()
        except FileNotFoundError:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        partial.write_bytes(bytes(data))
        partial.replace(target)
        return True

    def exists(self, key: str, bucket: str | None = None) -> bool:
        try:
            obstore.head(self._store(bucket), key)
        except FileNotFoundError:
            return False
        return True

    def url_to_get(self, key: str, bucket: str | None = None) -> str:
        return obstore.sign(self._store(bucket), "GET", key, self._expiry)

    def url_to_put(self, key: str) -> str:
        return obstore.sign(self._store(), "PUT", key, self._expiry)

    def delete_prefix(self, prefix: str) -> None:
        keys = [
            meta["path"] for batch in obstore.list(self._store(), prefix=prefix) for meta in batch
        ]
        if keys:
            obstore.delete(self._store(), keys)

    def delete(self, key: str) -> None:
        obstore.delete(self._store(), key)

    def listing(self, prefix: str) -> list[tuple[str, datetime]]:
        """(key, last modified) of every object under `prefix`."""
        return [
            (meta["path"], meta["last_modified"])
            for batch in obstore.list(self._store(), prefix=prefix)
            for meta in batch
        ]

    def problem(self) -> str | None:
        """Why the bucket cannot be written now (readiness), or None."""
        probe = f".ready/{uuid.uuid4().hex}"
        try:
            obstore.put(self._store(), probe, b"")
            obstore.delete(self._store(), probe)
        except Exception as error:  # noqa: BLE001 - any failure: not ready, with the reason
            return f"bucket {self.bucket} not writable: {type(error).__name__}"
        return None
