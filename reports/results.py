"""The accuracy results of a run, read from the stage manifests: one per trained model (baseline, fine-tuned,
distilled at each label budget) and the pretrained encoder's linear probe and kNN."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.manifest import split_instance

METHODS = {"baseline": "supervised baseline", "finetune": "SimCLRv2 fine-tuned", "distill": "SimCLRv2 distilled"}
KINDS = tuple(METHODS)  # baseline, finetune, distill: the order methods are listed in


@dataclass(frozen=True)
class ModelResult:
    stage: str  # the stage instance, e.g. "finetune[20labels]"
    kind: str  # baseline | finetune | distill
    budget: str  # budget name, e.g. "20labels"
    num_labels: int  # labels this model's training paid for (a student: its teacher's labels)
    top1: float
    top5: float
    num_test: int | None

    @property
    def method(self) -> str:
        return METHODS[self.kind]


@dataclass(frozen=True)
class EncoderResult:
    linear_probe_top1: float | None
    knn_top1: float | None
    num_train: int | None  # the probe and kNN are fitted on every training label
    num_test: int | None


def budget_labels(manifests: Mapping[str, dict]) -> dict[str, int]:
    """Budget name -> number of labels. The subsets stage is authoritative; a baseline or fine-tuning manifest fills
    in a budget it does not list (the 100%-label baseline, or a run without the subsets stage among the inputs)."""
    labels: dict[str, int] = {}
    for name, manifest in manifests.items():
        kind, budget = split_instance(name)
        if kind in ("baseline", "finetune") and "num_labels" in manifest["metrics"]:
            labels.setdefault(budget, int(manifest["metrics"]["num_labels"]))
    if "subsets" in manifests:
        labels.update({budget: int(n) for budget, n in manifests["subsets"]["metrics"]["num_labels"].items()})
    return labels


def model_results(manifests: Mapping[str, dict]) -> list[ModelResult]:
    """Every baseline / fine-tuned / distilled model, by number of labels, then baseline, fine-tuned, distilled."""
    labels, results = budget_labels(manifests), []
    for name, manifest in manifests.items():
        kind, budget = split_instance(name)
        if kind not in KINDS:
            continue
        if budget not in labels:
            raise ValueError(f"{name}: no stage among the inputs says how many labels budget {budget!r} has")
        metrics = manifest["metrics"]
        results.append(
            ModelResult(
                name, kind, budget, labels[budget], metrics["test_top1"], metrics["test_top5"], metrics.get("num_test")
            )
        )
    return sorted(results, key=lambda r: (r.num_labels, KINDS.index(r.kind)))


def encoder_result(manifests: Mapping[str, dict]) -> EncoderResult | None:
    """The evaluate stage's linear probe and kNN of the pretrained encoder; None when it is not among the inputs."""
    if "evaluate" not in manifests:
        return None
    metrics = manifests["evaluate"]["metrics"]
    return EncoderResult(
        metrics.get("linear_probe_top1"), metrics.get("knn_top1"), metrics.get("num_train"), metrics.get("num_test")
    )


def baseline_points(results: list[ModelResult]) -> list[tuple[int, float]]:
    """(labels, top-1) of the supervised baseline at each measured budget: the curve "labels needed" is read from."""
    return [(r.num_labels, r.top1) for r in results if r.kind == "baseline"]
