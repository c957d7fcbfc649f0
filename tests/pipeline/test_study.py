"""The study script's machinery on a tiny run (two seeds, one budget): every model of every seed is measured and
summarised. What the numbers are is the study's business, not this test's."""

import json

import pytest

from pipeline.study import MODELS, main
from tests.pipeline.conftest import TINY_RUN


@pytest.mark.slow
def test_the_study_measures_every_model_for_every_seed(tmp_path, capsys):
    sets = [item for pair in (("--set", item) for item in TINY_RUN) for item in pair]
    out = tmp_path / "study.json"
    main([*sets, "--set", f"runs_dir={tmp_path / 'runs'}", "--labels-per-class", "2", "--fraction", "--seeds", "0",
          "1", "--json", str(out)])  # fmt: skip
    results = json.loads(out.read_text())
    assert results["budgets"] == ["20labels"] and set(results["runs"]) == {"0", "1"}
    for run in results["runs"].values():
        models = run["budgets"]["20labels"]
        assert set(models) == set(MODELS)
        assert all(0 <= models[model]["test_top1"] <= 1 for model in MODELS)
        assert models["linear"]["classifier"].startswith("linear") and "teacher_test_top1" in models["distill"]
        assert run["pretrain_seconds"] > 0
    seed0, seed1 = (results["runs"][s]["budgets"]["20labels"]["finetune"] for s in ("0", "1"))
    assert seed0["num_labels"] == seed1["num_labels"] == 20
    table = capsys.readouterr().out
    assert "| 20labels | 20 | supervised baseline |" in table and "mean top-1 (2 seeds)" in table
    assert "student − teacher" in table and "Pretraining:" in table

    # Some models only: the pipeline runs just their stages, here all reused from the runs above.
    main([*sets, "--set", f"runs_dir={tmp_path / 'runs'}", "--labels-per-class", "2", "--fraction", "--seeds", "0",
          "--models", "distill", "--json", str(out)])  # fmt: skip
    again = json.loads(out.read_text())
    assert again["models"] == ["distill"] and set(again["runs"]["0"]["budgets"]["20labels"]) == {"distill"}
    assert (
        again["runs"]["0"]["budgets"]["20labels"]["distill"] == results["runs"]["0"]["budgets"]["20labels"]["distill"]
    )
