"""Where a ThumbnailJob's images live: a shared volume mounted at the same path by the runner
pods, the operator and the API (VolumeStorage), or a bucket of S3-compatible storage whose
objects runner pods read and write through presigned URLs (ObjectStorage)."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Protocol

from smartthumb.operator.kube.objectstore import ObjectStore
from smartthumb.operator.kube.resource import Source
from smartthumb.operator.kube.settings import StorageSettings
from smartthumb.operator.models import FailureReason

JOBS_DIR = "smartthumb"
"""Each job's own files: <volume>/smartthumb/<namespace>/<name>/ (outputs, uploaded inputs)."""
RUNNER_UID = 65532
"""The runner image's user (Dockerfile.runner), which the runner pods run as."""


def default_output(namespace: str, name: str, output: str | None, ext: str) -> str:
    """The thumbnail's path relative to the volume: spec.output, else the job's own folder."""
    return output if output is not None else f"{JOBS_DIR}/{namespace}/{name}/thumbnail.{ext}"


class SourceError(ValueError):
    """A source or output path cannot be used; `reason` is the Failed condition's reason."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def job_prefix(namespace: str, name: str) -> str:
    return f"{JOBS_DIR}/{namespace}/{name}/"


class Storage(Protocol):
    def resolve_source(self, source: Source) -> str:
        """The source as the runner should open it (a path in its pod, or a URL). Raises
        SourceError."""

    def output_location(self, namespace: str, name: str, output: str | None, ext: str) -> str:
        """Where the runner writes the thumbnail (a path in its pod, or a URL to PUT to).
        Raises SourceError."""

    def delete_job_files(self, namespace: str, name: str, output: str | None) -> None:
        """Remove what the job made; missing files are fine (idempotent)."""

    def remove_orphans(self, live: set[tuple[str, str]], grace_s: float) -> list[str]:
        """Remove job folders no live (namespace, name) owns and older than grace_s (the API
        writes uploads before it creates the job); the folders removed."""


class VolumeStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = root.resolve()

    def _inside(self, path: str, what: str) -> Path:
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise SourceError(
                FailureReason.bad_input,
                f"{what} {path!r} must be a path relative to the shared volume, without '..'",
            )
        return self.root / relative

    def _check_within(self, path: Path, shown: str, what: str) -> Path:
        real = path.resolve()
        if not real.is_relative_to(self._real_root):
            raise SourceError(
                FailureReason.bad_input, f"{what} {shown!r} resolves outside the shared volume"
            )
        return real

    def resolve_source(self, source: Source) -> str:
        if source.url is not None:
            return source.url  # the runner fetches it through its own guard
        if source.path is None:
            raise SourceError(
                FailureReason.bad_input,
                f"source {source.shown()}: s3 sources need object storage (SMARTTHUMB_STORAGE=s3)",
            )
        path = source.path
        candidate = self._inside(path, "source")
        real = self._check_within(candidate, path, "source")
        if not real.exists():
            raise SourceError(
                FailureReason.input_not_found, f"source {path!r} does not exist on the volume"
            )
        if not real.is_file():
            raise SourceError(FailureReason.bad_input, f"source {path!r} is not a file")
        # The resolved path: a symlink swapped in later cannot redirect the runner.
        return str(real)

    def _job_dir(self, namespace: str, name: str) -> Path:
        return self.root / job_prefix(namespace, name)

    def output_location(self, namespace: str, name: str, output: str | None, ext: str) -> str:
        shown = default_output(namespace, name, output, ext)
        target = self._inside(shown, "output")
        if target.exists() or target.is_symlink():
            self._check_within(target, shown, "output")
        target.parent.mkdir(parents=True, exist_ok=True)
        self._check_within(target.parent, shown, "output")
        if os.geteuid() == 0:  # an operator running as root hands the folder to the runner
            os.chown(target.parent, RUNNER_UID, RUNNER_UID)
        return str(target)

    def delete_job_files(self, namespace: str, name: str, output: str | None) -> None:
        if output is not None:
            target = self._inside(output, "output")
            if target.is_file() and target.resolve().is_relative_to(self._real_root):
                target.unlink(missing_ok=True)
        shutil.rmtree(self._job_dir(namespace, name), ignore_errors=True)

    def remove_orphans(self, live: set[tuple[str, str]], grace_s: float) -> list[str]:
        removed = []
        cutoff = time.time() - grace_s
        for folder in (self.root / JOBS_DIR).glob("*/*"):
            owner = (folder.parent.name, folder.name)
            if owner in live or not folder.is_dir() or folder.stat().st_mtime > cutoff:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"{owner[0]}/{owner[1]}")
        return removed


class ObjectStorage:
    """Runner pods get a presigned GET URL per source and a presigned PUT URL for the output,
    so they hold no credentials; `spec.output` is a key in the bucket."""

    def __init__(self, settings: StorageSettings) -> None:
        self.store = ObjectStore(settings)

    def resolve_source(self, source: Source) -> str:
        if source.url is not None:
            return source.url
        if source.s3 is None:
            raise SourceError(
                FailureReason.bad_input,
                f"source {source.shown()!r}: path "
                "sources need the shared volume (SMARTTHUMB_STORAGE=volume)",
            )
        if not self.store.exists(source.s3.key, source.s3.bucket):
            raise SourceError(
                FailureReason.input_not_found, f"source {source.shown()} does not exist"
            )
        return self.store.url_to_get(source.s3.key, source.s3.bucket)

    def output_location(self, namespace: str, name: str, output: str | None, ext: str) -> str:
        return self.store.url_to_put(default_output(namespace, name, output, ext))

    def delete_job_files(self, namespace: str, name: str, output: str | None) -> None:
        if output is not None:
            self.store.delete(output)
        self.store.delete_prefix(job_prefix(namespace, name))

    def remove_orphans(self, live: set[tuple[str, str]], grace_s: float) -> list[str]:
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
        newest: dict[tuple[str, str], datetime] = {}
        for key, modified in self.store.listing(f"{JOBS_DIR}/"):
            parts = key.split("/")
            if len(parts) >= 4:
                owner = (parts[1], parts[2])
                newest[owner] = max(modified, newest.get(owner, modified))
        removed = []
        for owner, modified in newest.items():
            if owner not in live and modified < cutoff:
                self.store.delete_prefix(job_prefix(*owner))
                removed.append(f"{owner[0]}/{owner[1]}")
        return removed


def storage_for(settings: StorageSettings) -> Storage:
    if settings.storage == "s3":
        return ObjectStorage(settings)
    return VolumeStorage(settings.volume_path)
