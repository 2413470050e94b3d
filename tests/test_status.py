"""`make status`: per step, what is done, failed and in all, on a run that has not started, one halfway, one with a
failed block, one running (a live lock holder and worker) and a finished one — read from disk, writing nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO
from predict_volumes import config, make_out_file

from lsd_nm.agglomerate import agglomerate
from lsd_nm.blockwise import BEATS
from lsd_nm.config import ConfigError
from lsd_nm.fragments import extract_fragments
from lsd_nm.steps import NAMES as STEPS
from lsd_nm.segments import extract_segmentation, find_segments
from lsd_nm.status import describe, run_status


def _counts(status) -> list[tuple[str, int, int, int, str]]:
    return [(s.name, s.done, s.failed, s.total, s.state) for s in status.steps]


def test_a_run_that_has_not_started_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=rf"^'{tmp_path / 'out.zarr'}' does not exist: no step of this run has started$"):
        run_status(config(tmp_path / "out.zarr", setup=None))


def test_status_follows_a_run_step_by_step(tmp_path):
    out = tmp_path / "out.zarr"
    make_out_file(out)
    run = config(out, setup=None, thresholds=(0.0, 0.5, 0.25), extract_thresholds=[0.25])
    assert [s.state for s in run_status(run).steps] == ["not started"] * 6
    fragments = extract_fragments(run, progress=False)
    assert _counts(run_status(run))[1:3] == [
        (STEPS[1], fragments.total, 0, fragments.total, "done"), (STEPS[2], 0, 0, 0, "not started")
    ]
    agglomerate(run, progress=False)
    find_segments(run, progress=False)
    status = run_status(run)
    assert _counts(status)[2:4] == [
        (STEPS[2], fragments.total, 0, fragments.total, "done"), (STEPS[3], 2, 0, 2, "done"),  # thresholds 0, 0.25
    ]
    extract_segmentation(run, progress=False)
    assert [s.state for s in run_status(run).steps] == ["not started", "done", "done", "done", "done", "not started"]
    lines = describe(run_status(run))
    assert lines[0] == f"{out}: not running"
    assert lines[2].split() == [STEPS[1], "done", f"{fragments.total}/{fragments.total}", "blocks"]
    assert lines[4].split() == [STEPS[3], "done", "2/2", "LUTs"]
    assert not list(out.glob("**/*status*"))  # it wrote nothing


def test_a_failed_block_is_counted_with_its_error_and_a_running_step_shows_its_eta_and_workers(tmp_path):
    out = tmp_path / "out.zarr"
    make_out_file(out)
    run = config(out, setup=None, num_workers=2)
    chunk = next(p for p in sorted((out / "volumes/affs").iterdir()) if p.name[0].isdigit())
    chunk.write_bytes(chunk.read_bytes()[:10])  # a damaged chunk: its block fails, the others are done
    with pytest.raises(ConfigError, match="cannot be decoded"):
        extract_fragments(run, progress=False)
    step = run_status(run).steps[1]
    assert step.failed >= 1 and step.done == step.total - step.failed and step.state == "failed"
    assert step.last_error.startswith("block ") and f"chunk {chunk.name} cannot be decoded" in step.last_error

    # the run is running again: its lock held by a live process, a worker on a block
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "out.zarr.lock").write_text(f"{sleeper.pid} {socket.gethostname()} 2026-12-07 10:00:00")
        beats = out / ".blocks" / "extract_fragments" / BEATS
        beats.mkdir(exist_ok=True)
        beat = {"host": socket.gethostname(), "pid": sleeper.pid, "block": 3, "started": time.time(), "slowest": 1.0}
        (beats / f"{socket.gethostname()}-{sleeper.pid}.json").write_text(json.dumps(beat))
        status = run_status(run)
        assert status.running == f"process {sleeper.pid} on {socket.gethostname()} since 2026-12-07 10:00:00"
        assert status.steps[1].workers == [f"{sleeper.pid}@{socket.gethostname()}: block 3"]
        # a failed step gets no ETA; as if it were halfway, 100 s after it started, it gets one
        total = status.steps[1].total
        status.steps[1].failed, status.steps[1].done, started = 0, total // 2, status.steps[1].started
        lines = describe(status, now=started + 100)
        line = next(x for x in lines if x.strip().startswith(STEPS[1]))
        done = total // 2
        eta = int(100 / done * (total - done))
        assert line.endswith(f"0:01:40 elapsed, ETA 0:{eta // 60:02d}:{eta % 60:02d}")
        assert f"      worker {sleeper.pid}@{socket.gethostname()}: block 3" in lines
    finally:
        sleeper.kill()
        sleeper.wait()
    # killed: the lock's holder is gone, and so is the worker
    status = run_status(run)
    assert status.running is None and status.steps[1].workers == []


def test_the_script_prints_one_json_object_with_the_steps_in_order(tmp_path):
    out = tmp_path / "out.zarr"
    make_out_file(out)
    path = tmp_path / "run.json"
    path.write_text(config(out, setup=None).model_dump_json())
    extract_fragments(config(out, setup=None), progress=False)
    done = subprocess.run([sys.executable, str(REPO / "03_predict/status.py"), str(path), "--json"],
                          capture_output=True, text=True, env={**os.environ})  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [s["name"] for s in found["steps"]] == STEPS
    assert {k: found["steps"][1][k] for k in ("done", "failed", "state")} == {"done": found["steps"][1]["total"], "failed": 0, "state": "done"}
    assert found["out_file"] == str(out) and found["running"] is None
