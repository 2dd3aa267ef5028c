"""How a runner process's exit status becomes a lifecycle event, and the argv it gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartthumb.operator.lifecycle import RunRunner
from smartthumb.operator.local.process import classify, runner_argv
from smartthumb.operator.models import RunOutcome
from smartthumb.runner.cli import _build_parser
from smartthumb.runner.spec import ThumbnailSpec

RESULT = '{"mode":"fit","method":"fit","output":{"format":"jpeg","width":10,"height":5,"bytes":9}}'


@pytest.mark.parametrize(
    ("exit_code", "stderr", "outcome", "message"),
    [
        (2, "smartthumb: error: cannot read a.jpg\n", RunOutcome.bad_input, "cannot read a.jpg"),
        (
            3,
            "smartthumb: error: out of memory\n",
            RunOutcome.oom,
            "out of memory at the 512 MiB memory limit",
        ),
        (
            3,
            "smartthumb: error: out of memory (cv2.abi3.so: failed to map segment)\n",
            RunOutcome.oom,
            "out of memory (cv2.abi3.so: failed to map segment) at the 512 MiB memory limit",
        ),
        (-9, "", RunOutcome.oom, "killed by SIGKILL at the 512 MiB memory limit"),
        (137, "", RunOutcome.oom, "killed by SIGKILL at the 512 MiB memory limit"),
        (
            1,
            "smartthumb: error: internal error: KeyError: 'x'\n",
            RunOutcome.internal,
            "internal error: KeyError: 'x'",
        ),
        (-11, "", RunOutcome.oom, "killed by SIGSEGV at the 512 MiB memory limit"),
        (-6, "", RunOutcome.oom, "killed by SIGABRT at the 512 MiB memory limit"),
        (-15, "", RunOutcome.internal, "killed by SIGTERM"),
        (5, "", RunOutcome.internal, "exit code 5"),
        (None, "", RunOutcome.internal, "the runner's fork server died"),
        (0, "", RunOutcome.internal, "unreadable result on stdout"),
    ],
)
def test_exit_statuses(exit_code, stderr, outcome, message):
    event = classify(exit_code, "", stderr, memory_limit_mb=512)
    assert (event.outcome, event.message) == (outcome, message)


def test_a_clean_exit_carries_the_result():
    event = classify(0, "log line\n" + RESULT + "\n", "", memory_limit_mb=512)
    assert event.outcome is RunOutcome.ok and event.result.output.width == 10


def test_the_argv_is_the_cli_contract(tmp_path: Path):
    spec = ThumbnailSpec(mode="fit", width=100)
    argv = runner_argv(
        spec,
        [tmp_path / "a.png", tmp_path / "b.png"],
        tmp_path / "out.jpg",
        RunRunner(fallback=True, reason="oom"),
    )
    args = _build_parser().parse_args(argv)
    assert ThumbnailSpec.model_validate_json(args.spec) == spec
    assert args.inputs == [tmp_path / "a.png", tmp_path / "b.png"]
    assert args.output == tmp_path / "out.jpg"
    assert args.fallback and args.fallback_reason == "oom"
    assert (
        not _build_parser()
        .parse_args(runner_argv(spec, [tmp_path], tmp_path, RunRunner(fallback=False)))
        .fallback
    )


def _fit_argv(tmp_path: Path, source: Path, name: str) -> list[str]:
    spec = ThumbnailSpec(mode="fit", width=64)
    return ["crop", "--spec", spec.model_dump_json(), "-o", str(tmp_path / name), str(source)]


def test_warm_workers_survive_bad_input_and_are_replaced_after_oom_and_retirement(
    tmp_path: Path,
) -> None:
    from PIL import Image

    from smartthumb.operator.local.process import ForkServer

    source = tmp_path / "in.png"
    Image.radial_gradient("L").convert("RGB").resize((800, 600)).save(source)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    server = ForkServer(max_runs_per_worker=2)
    server.start()
    try:
        # Concurrent runs with workers retiring after two: none may be lost to a retiring one.
        runs = [server.run(_fit_argv(tmp_path, source, f"o{i}.jpg"), tmp_path / f"r{i}", 1024)
                for i in range(12)]
        assert all(run.wait(60) for run in runs)
        assert [run.outcome().outcome for run in runs] == [RunOutcome.ok] * 12

        bad = server.run(_fit_argv(tmp_path, broken, "b.jpg"), tmp_path / "bad", 1024)
        assert bad.wait(60) and bad.outcome().outcome is RunOutcome.bad_input
        starved = server.run(_fit_argv(tmp_path, source, "s.jpg"), tmp_path / "oom", 64)
        assert starved.wait(60) and starved.outcome().outcome is RunOutcome.oom
        after = server.run(_fit_argv(tmp_path, source, "a.jpg"), tmp_path / "after", 1024)
        assert after.wait(60) and after.outcome().outcome is RunOutcome.ok, after.outcome()
    finally:
        server.close()
