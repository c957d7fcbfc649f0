from reports.headline import headline
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, NO_BASELINE, LabelsNeeded
from reports.results import ModelResult
from reports.savings import Saving, saving


def result(kind: str, labels: int, top1: float) -> ModelResult:
    return ModelResult(f"{kind}[{labels}labels]", kind, f"{labels}labels", labels, top1, 1.0, 100)


def test_fine_tuned_model_when_the_student_is_not_better():
    baseline = [(20, 0.60), (144, 0.92)]
    savings = [saving(result(k, n, a), baseline, 0.1) for k, n, a in [("finetune", 20, 0.65), ("distill", 20, 0.575)]]
    savings.append(saving(result("distill", 144, 0.99), baseline, 0.1))  # better, but not at the smallest budget
    assert headline(savings, "USD") == (
        "With 20 labels the fine-tuned model reaches 65.0%; supervised training needs about 28 labels for that "
        "(8 more, 0.80 USD)."
    )


def test_beyond_and_at_most_wording():
    beyond = Saving(result("distill", 20, 0.95), LabelsNeeded(BEYOND, 144), None, None)
    assert headline([beyond], "USD") == (
        "With 20 labels the distilled model reaches 95.0%; supervised training does not reach that within the "
        "measured range (> 144 labels)."
    )
    at_most = Saving(result("finetune", 20, 0.5), LabelsNeeded(AT_MOST, 20), None, None)
    assert headline([at_most], "USD").endswith(
        "supervised training reaches that with at most 20 labels, so no labels are saved."
    )


def test_no_saving_is_not_announced_as_one():
    worse = Saving(result("finetune", 144, 0.84), LabelsNeeded(INTERPOLATED, 89), -55, -5.5)
    assert headline([worse], "USD").endswith("supervised training needs about 89 labels for that.")


def test_no_baseline_and_no_model():
    alone = Saving(result("finetune", 20, 0.5), LabelsNeeded(NO_BASELINE, None), None, None)
    assert headline([alone], "USD").endswith("no supervised baseline was trained to compare with.")
    assert "no SimCLRv2 model" in headline([], "USD")
