"""lsd_nm.steps: one definition per 03_predict step, and every place that names a step derives from it."""

import ast
import re

import pytest
from conftest import REPO

from lsd_nm import steps
from lsd_nm.cli import build_parser
from lsd_nm.run_config import RunConfig
from lsd_nm.segment import RUNS
from lsd_nm.steps import STEPS

SCRIPTS = REPO / "03_predict"


def _numbered_scripts() -> dict[int, str]:
    return {int(p.name[:2]): p.name for p in SCRIPTS.glob("[0-9][0-9]_*.py")}


def test_the_registry_is_the_numbered_scripts_in_order():
    assert [s.number for s in STEPS] == list(range(1, len(STEPS) + 1))
    scripts = _numbered_scripts()
    assert {n: scripts[n] for n in scripts if n <= len(STEPS)} == {s.number: s.script for s in STEPS}
    assert all(s.name.startswith(f"{s.number:02d}_") for s in STEPS)
    # after the steps come the drivers of several runs, which are no step of one run
    assert sorted(n for n in scripts if n > len(STEPS)) == [7] and scripts[7] == "07_reproduce.py"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_each_script_runs_its_step_and_says_so(step):
    source = (SCRIPTS / step.script).read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring.startswith(f"Step {step.number}: ")
    assert re.search(rf"^Run: python 03_predict/{re.escape(step.script)} ", docstring, re.M)
    assert f'main(["{step.command}", *sys.argv[1:]])' in source


def test_the_command_line_and_the_chain_take_the_steps_from_the_registry():
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for step in STEPS:
        assert subcommands[step.command].description == step.summary
    assert list(RUNS) == list(STEPS)
    assert steps.step(2) is steps.EXTRACT_FRAGMENTS
    with pytest.raises(ValueError, match="the steps are 1 to 6"):
        steps.step(7)


def test_a_step_invalidates_only_later_steps():
    for step in STEPS:
        assert all(step.number < later <= len(STEPS) for later in step.invalidates)
        assert set(step.blockwise) <= set(step.tracking)


def test_clear_forgets_a_steps_tracking_and_derived_outputs_only(tmp_path):
    config = RunConfig(raw_file=str(tmp_path / "raw.zarr"), out_file=str(tmp_path / "out.zarr"))
    blocks = config.blocks_dir
    for folder in ("segmentation_50_29", "extract_fragments", "agglomerate"):
        (blocks / folder).mkdir(parents=True)
    (blocks / "segmentation_50.complete").write_text("segmentation_50_29\n")
    (config.out_path / "volumes/segmentation_50").mkdir(parents=True)
    (config.out_path / "volumes/fragments").mkdir(parents=True)
    (config.out_path / "luts/fragment_segment").mkdir(parents=True)
    (config.out_path / "luts/fragment_segment/seg_mean_50.npz").write_bytes(b"")
    steps.AGGLOMERATE.write_record(config, {"merge_function": "mean"})
    assert steps.AGGLOMERATE.read_record(config) == {"merge_function": "mean"}

    steps.EXTRACT_FRAGMENTS.invalidate_later(config)
    left = sorted(str(p.relative_to(config.out_path)) for p in config.out_path.rglob("*"))
    assert left == [".blocks", ".blocks/extract_fragments", "luts", "luts/fragment_segment", "volumes", "volumes/fragments"]
    assert steps.AGGLOMERATE.read_record(config) is None
