"""What a finished run left behind, found from its directory (`runs_dir/<experiment>`): its newest report, the stage
directories that report read, the pretrained encoder, the teacher, and the model that pre-labels.
`simclrv2 report|predict|select` start from here, so that a user names a run, not a fingerprint."""

from __future__ import annotations

from pathlib import Path

from pipeline.manifest import MANIFEST, is_complete, read_manifest, split_instance, stage_dirname
from pipeline.plan import PREDICT, REPORT


def find_report_dir(run_dir: Path) -> Path:
    """`run_dir` itself when it is a report stage directory, else the newest report under it with a manifest (its
    files may be missing: `simclrv2 report` rebuilds them)."""
    if (run_dir / MANIFEST).is_file():
        return run_dir
    newest = newest_finished(run_dir, REPORT, complete=False)
    if newest is None:
        raise FileNotFoundError(
            f"no finished report under {run_dir}: pass runs/<experiment> or a report directory of a finished run"
        )
    return newest


def newest_finished(run_dir: Path, instance: str, complete: bool = True) -> Path | None:
    """The newest finished directory of `instance` ("pretrain", "distill[10pct]") under `run_dir`, or None; with
    `complete`, only one whose every artifact is still there."""
    finished = [path.parent for path in (run_dir / stage_dirname(instance)).glob(f"*/{MANIFEST}")]
    finished = [path for path in finished if is_complete(path) or not complete]
    return max(finished, key=lambda path: (path / MANIFEST).stat().st_mtime) if finished else None


def report_inputs(run_dir: Path) -> dict[str, Path]:
    """Instance name -> stage directory, as the newest report read them; {} before a report exists."""
    try:
        manifest = read_manifest(find_report_dir(run_dir))
    except (FileNotFoundError, ValueError):
        return {}
    return {name: Path(entry["path"]) for name, entry in manifest["inputs"].items()}


def stage_config(stage_dir: Path) -> dict:
    """The config a stage directory was made with (its manifest's), or {} for a bare output directory."""
    try:
        return read_manifest(stage_dir)["config"]
    except (FileNotFoundError, ValueError):
        return {}


def default_classifier(run_dir: Path) -> Path:
    """The model that pre-labeled the run's unlabeled images (the predict stage's), by default the distilled student
    of the last budget; a stage directory with weights is its own answer."""
    if (run_dir / "model.safetensors").is_file():
        return run_dir
    inputs = report_inputs(run_dir)
    if PREDICT in inputs:
        return Path(read_manifest(inputs[PREDICT])["inputs"]["classifier"]["path"])
    raise FileNotFoundError(
        f"{run_dir} is neither a finished run (runs/<experiment> with a report) nor a finetune, baseline or distill "
        "output directory"
    )


def pretrain_dir(run_dir: Path) -> Path:
    """The run's pretrained encoder: `run_dir` when it is a pretrain directory, else the newest finished one."""
    if (run_dir / "model.safetensors").is_file():
        return run_dir
    found = report_inputs(run_dir).get("pretrain") or newest_finished(run_dir, "pretrain")
    if found is None:
        raise FileNotFoundError(
            f"no finished pretraining under {run_dir}: run it first (simclrv2 run CONFIG --only pretrain), or pass "
            "runs/<experiment> of a run that has it"
        )
    return found


def data_settings(run_dir: Path) -> dict:
    """The data config of the run's newest report (its labels file included), else its pretraining's: pretraining
    is reused across labeling rounds, so its manifest keeps the data config of the round that made it."""
    subsets = report_inputs(run_dir).get("subsets")
    return stage_config(subsets or pretrain_dir(run_dir)).get("data", {})


def teacher_dir(run_dir: Path) -> Path | None:
    """The fine-tuned classifier with the most labels in the run's newest report, or None (a cold start)."""
    finetuned = {name: path for name, path in report_inputs(run_dir).items() if split_instance(name)[0] == "finetune"}
    if not finetuned:
        return None
    return max(finetuned.values(), key=lambda path: read_manifest(path)["metrics"].get("num_labels", 0))
