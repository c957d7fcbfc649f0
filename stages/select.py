"""Stage `select`: which unlabeled images to label next, written as a list a person (or a labeling tool) works through.

    python -m stages.select --out to-label --pretrain runs/pretrain --budget 50 --image-size 16
    python -m stages.select --out to-label --pretrain runs/pretrain --teacher runs/finetune --budget 50 --image-size 16

Inputs: `--pretrain DIR` (its encoder embeds every training image) and, optionally, `--teacher DIR` (a fine-tuned
classifier, whose uncertainty then steers the choice) and `--subset FILE` (its label subset). When every training
image has a label (a labeled dataset whose scarcity is simulated), the labeled images are the subset's, or none.
Strategies (stages/selection/ranking.py): with no teacher (a cold start, no labels needed), typical points of k-means
clusters that hold no labeled image; with one, the most uncertain images, spread out by k-center greedy on the
embeddings. Images that already have a label, test images included, are never picked.

Writes `to_label.csv` (image, label, path, rank, score, reason: fill in `label` and pass the file as `data.labels`,
or append its rows to the labels file you have), `label_studio_tasks.json` (when the images are files) and
`metrics.json` to `--out`. Existing lists are never overwritten.
"""

from __future__ import annotations

import logging
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge
from pydantic import StrictInt

from stages.config_schema import SPEED_ONLY, config_dataclass
from stages.data.label_subsets import labeled_images
from stages.data.sources import DataConfig, load_train
from stages.evaluation.metrics import class_probabilities, extract_features
from stages.models.weights import check_same_classes, load_classifier, load_pretrained, weights_file
from stages.selection.label_lists import write_label_studio_tasks, write_selection_csv
from stages.selection.ranking import rank_for_labeling
from stages.training.accelerator import make_accelerator
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage

log = logging.getLogger(__name__)
SELECTION_CSV, LABEL_STUDIO_TASKS = "to_label.csv", "label_studio_tasks.json"


@config_dataclass
class SelectConfig:
    data: DataConfig = field(default_factory=DataConfig)
    budget: Annotated[StrictInt, Ge(1)] = 50
    """how many images to pick for labeling"""
    image_size: Annotated[StrictInt, Ge(1)] | None = None
    """side of the centre crop fed to the networks: the pretraining image_size (`simclrv2 select` fills it in)"""
    strategy: Literal["auto", "typical", "k-center", "uncertainty"] = "auto"
    """auto: uncertainty with a teacher, else typical cluster points"""
    seed: StrictInt = 0
    """seed of the clustering"""
    label_studio_root: str = "/"
    """the folder Label Studio serves local files from (LOCAL_FILES_DOCUMENT_ROOT)"""
    eval_batch_size: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 256
    """images per forward pass"""


def run(config: SelectConfig, inputs: dict[str, Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    if "pretrain" not in inputs:
        raise ValueError("select needs the 'pretrain' input: the output directory of the pretrain stage")
    weights_file(inputs["pretrain"], "pretrain")
    if "teacher" in inputs:
        weights_file(inputs["teacher"], "finetune")
    if config.image_size is None:
        raise ValueError("select needs --image-size: the image_size pretraining used")
    for name in (SELECTION_CSV, LABEL_STUDIO_TASKS):
        if (out_dir / name).exists():
            raise FileExistsError(f"{out_dir / name} exists and is kept; pass another --out directory")
    accelerator = make_accelerator(out_dir, config.seed)
    device = accelerator.device
    train = load_train(config.data)
    encoder = load_pretrained(inputs["pretrain"])[0].encoder.to(device)
    features = extract_features(encoder, train, config.image_size, config.eval_batch_size, device)
    probabilities = None
    if "teacher" in inputs:
        teacher = load_classifier(inputs["teacher"])
        check_same_classes(teacher.class_names, train, teacher.file)
        model = teacher.model.to(device)
        probabilities = class_probabilities(model, train, config.image_size, config.eval_batch_size, device)
    labeled = labeled_images(train, inputs.get("subset"))
    selection = rank_for_labeling(features, labeled, config.budget, config.seed, probabilities, config.strategy)
    rows = selection.rows.tolist()
    ids = [train.ids[row] for row in rows]
    paths = [train.paths[row] if train.paths else None for row in rows]

    def write_lists() -> dict:
        write_selection_csv(out_dir / SELECTION_CSV, ids, paths, selection.scores, selection.reasons)
        if all(paths):
            write_label_studio_tasks(out_dir / LABEL_STUDIO_TASKS, ids, paths, config.label_studio_root)
        log.info("wrote the %d images to label next to %s", len(ids), out_dir / SELECTION_CSV)
        return {}

    metrics = {
        "num_selected": len(ids),
        "strategy": selection.strategy,
        "score": selection.score_name,
        "num_images": len(train),
        "num_labeled": int(labeled.sum()),
        "teacher": str(inputs.get("teacher", "")) or None,
    }
    return finish_stage(accelerator, out_dir, metrics, write_lists)


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(
        "stages.select", SelectConfig, __doc__, argv, inputs=("pretrain",), optional_inputs=("teacher", "subset")
    )
    run_and_print("stages.select", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
