""".github/workflows cannot run here (no GitHub, no kind): they are checked for what can go
stale instead. They parse; every action is pinned to a commit; no image is `:latest`; the
make targets, files and pytest marker they name exist; the e2e job sets exactly the variables
tests/test_helm_install.py reads, and its kind cluster mounts the volume and publishes the
node port those tests use."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import test_helm_install
import test_real_node
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = sorted(path.name for path in WORKFLOWS.glob("*.yaml"))
REPO_PATH = re.compile(r"(?:Dockerfile\.\w+|[\w.-]+\.yaml|(?:tests|charts|hack|\.github)/[\w./-]+)")
"""A word of a command that names a file of the repository."""


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as true
    return workflow


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def commands(workflow: dict[str, Any]) -> list[list[str]]:
    """Each shell line of every `run:` as words (continuations joined)."""
    lines = []
    for step in steps(workflow):
        for line in step.get("run", "").replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(shlex.split(line))
    return lines


def test_the_workflows_are_there() -> None:
    assert {"test.yaml", "e2e-kind.yaml"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_parses_and_pins_what_it_uses(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    workflow = load(name)
    assert workflow["on"] and workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    for job in workflow["jobs"].values():
        assert job["runs-on"].startswith("ubuntu-") and job["runs-on"] != "ubuntu-latest"
        assert job["steps"]
    for step in steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            # The version the commit is, for the reader.
            assert re.search(re.escape(step["uses"]) + r" # v\d+\.\d+\.\d+", text), step["uses"]
    assert not re.search(r":latest\b", text)


@pytest.mark.parametrize("name", NAMES)
def test_the_targets_and_files_they_name_exist(name: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    workflow = load(name)
    for words in commands(workflow):
        for index, word in enumerate(words):
            if word == "make":
                target = words[index + 1]
                assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no make target {target}"
            if REPO_PATH.fullmatch(word):
                assert (REPO / word).exists(), f"{word} is not in the repository"
    for step in steps(workflow):
        config = step.get("with", {}).get("config")
        if config:
            assert (REPO / config).exists(), config
        if "hashFiles" in str(step.get("with", {})):
            for path in re.findall(r"hashFiles\('([^']+)'\)", str(step["with"])):
                assert (REPO / path).exists(), path


def test_the_e2e_job_runs_the_real_node_marker_with_the_variables_the_tests_read() -> None:
    workflow = load("e2e-kind.yaml")
    [pytest_line] = [words for words in commands(workflow) if "pytest" in " ".join(words)]
    marker = pytest_line[pytest_line.index("-m", pytest_line.index("pytest")) + 1]
    assert marker == "node"
    for module in (test_helm_install, test_real_node):  # the marker of the real-node tests
        assert marker in {mark.name for mark in module.pytestmark}
    registered = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'"{marker}: ', registered)

    run = "\n".join(step.get("run", "") for step in steps(workflow))
    exported = set(re.findall(r"export (SMARTTHUMB_E2E_\w+)=", run))
    read = set(re.findall(r"SMARTTHUMB_E2E_\w+", Path(test_helm_install.__file__).read_text()))
    assert exported == read - {"SMARTTHUMB_E2E_VALUES"}  # the one that is optional
    images = re.search(r'SMARTTHUMB_E2E_IMAGES="([^"]+)"', run).group(1)
    loaded = re.search(r"kind load docker-image .*", run).group(0)
    built = re.findall(r'docker build .* -t "([^"]+)"', run)
    for item in images.split(","):
        image = item.split("=", 1)[1]
        assert f'"{image}"' in loaded and image in built and ":$TAG" in image


def test_the_kind_cluster_mounts_the_volume_and_publishes_the_node_port() -> None:
    workflow = load("e2e-kind.yaml")
    [kind_step] = [s for s in steps(workflow) if s.get("uses", "").startswith("helm/kind-action@")]
    assert "@sha256:" in kind_step["with"]["node_image"]
    cluster = yaml.safe_load((REPO / kind_step["with"]["config"]).read_text())
    [node] = cluster["nodes"]
    run = "\n".join(step.get("run", "") for step in steps(workflow))
    volume = re.search(r"export SMARTTHUMB_E2E_VOLUME=(\S+)", run).group(1)
    assert node["extraMounts"] == [{"hostPath": volume, "containerPath": volume}]
    assert f"mkdir -m 0777 {volume}" in run
    [port] = node["extraPortMappings"]
    assert port["containerPort"] == port["hostPort"] == test_helm_install.E2E_NODE_PORT
    api_url = re.search(r"export SMARTTHUMB_E2E_API_URL=(\S+)", run).group(1)
    assert api_url == f"http://{port['listenAddress']}:{port['hostPort']}"
