"""The Kubernetes termination message: a small JSON document the operator reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TERMINATION_MESSAGE_LIMIT = 4096
"""The kubelet keeps at most 4 KiB of /dev/termination-log."""


def compact(document: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Serialise the result, dropping detail (never the verdict) until it fits the limit."""
    doc = dict(document)
    text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) <= limit:
        return text
    selected = set(doc.get("selected", []))
    doc["inputs"] = [entry for entry in doc.get("inputs", []) if entry.get("index") in selected]
    doc["inputs_truncated"] = True
    for dropped in ("inputs", "timings_ms", "selected"):
        text = json.dumps(doc, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        doc.pop(dropped, None)
    text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) <= limit:
        return text
    # Only a pathological message (a huge error string) gets here: cut it to size.
    return json.dumps({"error": str(doc.get("error", "result too large"))[: limit // 2]})


def write_termination_message(path: Path, document: dict[str, Any]) -> None:
    path.write_text(compact(document))
