"""The default model's lineage: a queue of runs that start from and distil from earlier ones."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from henet_edge.device.classify import DEFAULT_BUNDLE
from henet_edge.henet_keras.campaign import check_queue, run_queue
from henet_edge.henet_keras.lineage import DEFAULT_LINEAGE, SHIPPED_STAGE, Lineage, Stage
from henet_edge.henet_keras.run import Run, RunError

STAGES = (Stage("a", repeat=1, epochs=1),
          Stage("kd/b", repeat=1, epochs=1, lr=0.01, init_from="a", teachers=("a",)))


def _lineage(root, data, stages=STAGES) -> Lineage:
    return Lineage(root=root, data=str(data), stages=stages, batch_size=8, val_split=0.25)


@pytest.fixture(scope="module")
def made(image_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    said: list[str] = []
    run_queue(_lineage(root, image_folder).queue(), echo=said.append, show_bar=False)
    return root, said


def test_a_later_stage_starts_from_and_learns_from_an_earlier_one(made):
    root, said = made
    assert said[0] == "a: starting" and "kd/b: starting" in said
    b = Run.load(root / "kd" / "b").train_config
    assert Path(b.init_from) == (root / "a").absolute()
    assert [Path(t) for t in b.teachers] == [(root / "a").absolute()]
    assert any(line.startswith("distilling from 1 teacher") for line in said)


def test_status_recognises_the_finished_stages_whatever_the_path_spelling(made, image_folder,
                                                                         monkeypatch):
    root, _ = made
    monkeypatch.chdir(root.parent)  # the root given relative, not as it was when made
    rows = check_queue(_lineage(Path(root.name), image_folder).queue())
    assert [(r["run"], r["state"]) for r in rows] == [("a", "finished"), ("kd/b", "finished")]


def test_a_stage_with_other_teachers_is_refused_naming_them(made, image_folder):
    root, _ = made
    stages = (STAGES[0], Stage("kd/b", repeat=1, epochs=1, lr=0.01, init_from="a"))
    before = (root / "kd" / "b" / "config.json").read_bytes()
    with pytest.raises(RunError, match=r"teachers: run has \['[^']*/a'\], campaign wants None"):
        run_queue(_lineage(root, image_folder, stages).queue(), echo=lambda _m: None)
    assert (root / "kd" / "b" / "config.json").read_bytes() == before


def test_a_stage_building_on_a_later_stage_is_refused():
    with pytest.raises(RunError, match="'b' builds on a, which no earlier stage makes"):
        Lineage(root=Path("x"), data="d", stages=(Stage("b", init_from="a"), Stage("a")))
    Lineage(root=Path("x"), data="d")  # the default lineage is in a trainable order


def test_the_default_lineage_ends_with_a_distilled_henet_r3():
    last = DEFAULT_LINEAGE[-1]
    assert (last.model, last.repeat) == ("henet", 3) and last.teachers


def test_the_script_lists_every_stage_as_new_in_an_empty_root(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "default_model.py"
    proc = subprocess.run([sys.executable, str(script), "status", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["run"] for r in rows] == [s.name for s in DEFAULT_LINEAGE]
    assert {r["state"] for r in rows} == {"new"}
    assert list(tmp_path.iterdir()) == []


def test_a_stage_carries_every_distillation_setting_into_its_config():
    stage = Stage("s", teachers=("t",), teacher_flip=True, distill_temperature=1.0,
                  augment="cifar", mixup=1.0)
    config = Lineage(root=Path("r"), data="d", stages=(Stage("t"), stage)).config(stage)
    assert (config.distill_temperature, config.teacher_flip, config.augment,
            config.mixup) == (1.0, True, "cifar", 1.0)
    assert config.teachers == [str(Path("r") / "t")]


def test_the_packaged_bundle_converts_the_shipped_stage_s_committed_weights():
    """The default model's record names the run it came from; the hashes must agree."""
    assert SHIPPED_STAGE in [stage.name for stage in DEFAULT_LINEAGE]
    run_dir = Path(__file__).resolve().parent.parent / "training" / SHIPPED_STAGE
    manifest = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    source = run_dir / manifest["source_model"]["file"]
    assert manifest["source_model"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
