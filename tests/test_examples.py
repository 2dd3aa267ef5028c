"""examples/*.yaml: each is a valid ThumbnailJob (with what it needs, such as a Secret) by the
models the CRD is made from, and each is applied by a test that checks its thumbnail
(test_helm_install.py on the real node, test_s3.py for object storage)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubestack import EXAMPLES, example
from smartthumb.operator.kube import resource
from smartthumb.operator.kube.resource import ThumbnailJobSpec

TESTS = Path(__file__).resolve().parent
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))


def test_there_is_an_example_for_each_kind_of_job() -> None:
    assert {"crop", "pair", "fit", "s3", "url", "webhook"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_example_is_a_valid_thumbnailjob(name: str) -> None:
    documents = example(name)
    jobs = [doc for doc in documents if doc["kind"] == "ThumbnailJob"]
    assert jobs, f"{name}.yaml has no ThumbnailJob"
    for job in jobs:
        assert job["apiVersion"] == f"{resource.GROUP}/{resource.VERSION}"
        ThumbnailJobSpec.model_validate(job["spec"])
        secret = (job["spec"].get("webhook") or {}).get("secretRef")
        if secret:  # the Secret it names comes with it
            [key] = [
                doc
                for doc in documents
                if doc["kind"] == "Secret" and doc["metadata"]["name"] == secret["name"]
            ]
            assert key["stringData"][secret["key"]].startswith("whsec_")


@pytest.mark.parametrize("name", NAMES)
def test_each_example_is_applied_by_a_test(name: str) -> None:
    used = re.compile(
        rf"""example\("{name}"\)|examples/{name}\.yaml|"examples" / "{name}\.yaml\""""
    )
    users = [
        path.name
        for path in TESTS.glob("test_*.py")
        if path.name != Path(__file__).name and used.search(path.read_text())
    ]
    assert users, f"examples/{name}.yaml is used by no test"
