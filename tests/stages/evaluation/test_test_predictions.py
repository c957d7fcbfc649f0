"""test_predictions.csv (stages/evaluation/test_predictions.py): ids and class names a spreadsheet would run as
formulas are escaped, confidences stay numbers."""

from types import SimpleNamespace

import pandas as pd
import torch

import stages.evaluation.test_predictions as test_predictions
from stages.data.spreadsheet_cells import unescape_cell


def test_text_cells_are_escaped_and_numbers_are_not(tmp_path, monkeypatch):
    classes = ["=cat", "-1", "dog"]
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [float("nan")] * 3, [0.2, 0.5, 0.3]])
    monkeypatch.setattr(test_predictions, "class_probabilities", lambda *args: probabilities)
    test = SimpleNamespace(ids=["+a.png", "@b.png", "broken.png", "c.png"], labels=torch.tensor([0, 2, 1, 1]))
    path = tmp_path / test_predictions.TEST_PREDICTIONS
    test_predictions.write_test_predictions(torch.nn.Identity(), test, classes, 8, path)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [
        "image,label,predicted,confidence",
        "'+a.png,'=cat,'=cat,0.7",
        "'@b.png,dog,dog,0.6",
        "c.png,'-1,'-1,0.5",
    ]
    table = pd.read_csv(path, dtype={"image": str, "label": str, "predicted": str}, keep_default_na=False)
    assert table["image"].map(unescape_cell).tolist() == ["+a.png", "@b.png", "c.png"]
    assert table["label"].map(unescape_cell).tolist() == ["=cat", "dog", "-1"]
