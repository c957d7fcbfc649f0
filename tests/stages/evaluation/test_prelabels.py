"""Pre-labels (stages/evaluation/prelabels.py): predictions under the evaluation preprocessing, streamed into a CSV
and a Parquet file with the same rows, written atomically."""

import csv

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stages.data.augment import CenterCrop
from stages.data.spreadsheet_cells import unescape_cell
from stages.evaluation.prelabels import PredictionBatch, PrelabelWriter, predict_batches

CLASSES = ["cat", "dog", "bird, small", 'say "hi"']  # a comma and quotes: the CSV must quote them


class TinyClassifier(nn.Module):
    """Linear on the pixels, with dropout: in training mode its outputs are random, in eval mode not. Records the
    grad mode each forward pass ran in."""

    def __init__(self, image_size: int, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * image_size * image_size, num_classes))
        self.grad_modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.grad_modes.append(torch.is_grad_enabled())
        return self.net(images) * 20  # sharp enough that the top-k are distinct


def image_batches(num_images: int, batch_size: int, size: int = 12):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (num_images, 3, size, size), dtype=torch.uint8, generator=generator)
    ids = [f"img-{i:03d}" for i in range(num_images)]
    return (
        images,
        ids,
        [(ids[s : s + batch_size], images[s : s + batch_size]) for s in range(0, num_images, batch_size)],
    )


def test_predict_batches_matches_a_direct_forward_pass_in_eval_mode():
    model = TinyClassifier(8, len(CLASSES)).train()
    images, ids, batches = image_batches(10, 4)
    out = []
    for batch in predict_batches(model, batches, image_size=8, top_k=3):
        assert torch.is_grad_enabled() and model.training  # the caller's state between batches
        out.append(batch)
    assert [len(batch) for batch in out] == [4, 4, 2]
    model.eval()
    with torch.no_grad():
        probs = model(CenterCrop.for_evaluation(8)(images)).softmax(dim=1)
    expected = probs.topk(3, dim=1)
    assert [i for batch in out for i in batch.ids] == ids
    top_classes = torch.cat([batch.top_classes for batch in out])
    top_probs = torch.cat([batch.top_probs for batch in out])
    assert torch.equal(top_classes, expected.indices)
    torch.testing.assert_close(top_probs, expected.values)
    assert torch.equal(torch.cat([b.predicted for b in out]), probs.argmax(dim=1))
    torch.testing.assert_close(torch.cat([b.confidence for b in out]), probs.max(dim=1).values)
    assert model.grad_modes[:3] == [False, False, False]  # the three batches ran without gradients


def test_predict_batches_gives_at_most_every_class():
    model = TinyClassifier(8, len(CLASSES))
    _, _, batches = image_batches(3, 3)
    (batch,) = predict_batches(model, batches, image_size=8, top_k=10)
    assert batch.top_classes.shape == (3, len(CLASSES))
    torch.testing.assert_close(batch.top_probs.sum(dim=1), torch.ones(3))


def prediction(ids: list[str], classes: list[list[int]], probs: list[list[float]]) -> PredictionBatch:
    return PredictionBatch(ids, torch.tensor(classes), torch.tensor(probs, dtype=torch.float32))


BATCHES = [
    prediction(["a", "b"], [[1, 0, 2], [3, 2, 1]], [[0.9, 0.05, 0.03], [0.5, 0.3, 0.1]]),
    prediction(["c"], [[2, 3, 0]], [[0.123456789, 0.1, 0.01]]),
]


def write_prelabels(stem, top_k: int = 2) -> PrelabelWriter:
    with PrelabelWriter(stem, CLASSES, top_k=top_k) as writer:
        writer.write(BATCHES[0], paths=["x/a.png", "x/b.png"])
        writer.write(BATCHES[1])
    return writer


def test_writer_writes_the_same_rows_to_csv_and_parquet(tmp_path):
    writer = write_prelabels(tmp_path / "prelabels")
    assert writer.rows == 3
    columns = ["image", "path", "predicted", "confidence", "top1", "top1_prob", "top2", "top2_prob"]
    with (tmp_path / "prelabels.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == columns
    assert rows[1] == ["a", "x/a.png", "dog", "0.9", "dog", "0.9", "cat", "0.05"]
    assert rows[2] == ["b", "x/b.png", 'say "hi"', "0.5", 'say "hi"', "0.5", "bird, small", "0.3"]
    assert rows[3] == ["c", "", "bird, small", "0.12345679", "bird, small", "0.12345679", 'say "hi"', "0.1"]
    table = pd.read_parquet(tmp_path / "prelabels.parquet")
    assert list(table.columns) == columns
    assert table["confidence"].dtype == np.float32
    from_csv = pd.read_csv(tmp_path / "prelabels.csv", keep_default_na=False)
    for column in columns:
        if column == "confidence" or column.endswith("_prob"):
            assert np.array_equal(from_csv[column].to_numpy(np.float32), table[column].to_numpy()), column
        else:
            assert from_csv[column].tolist() == table[column].tolist(), column
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prelabels.csv", "prelabels.parquet"]


def test_writer_keeps_at_most_every_class(tmp_path):
    with PrelabelWriter(tmp_path / "p", CLASSES[:3], top_k=5) as writer:
        writer.write(prediction(["a"], [[1, 0, 2]], [[0.5, 0.3, 0.2]]))
    assert list(pd.read_parquet(tmp_path / "p.parquet").columns)[-2:] == ["top3", "top3_prob"]


def test_writer_is_atomic_on_error(tmp_path):
    write_prelabels(tmp_path / "prelabels")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="stop"), PrelabelWriter(tmp_path / "prelabels", CLASSES, 2) as writer:
        writer.write(BATCHES[1])
        raise RuntimeError("stop")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # earlier files as they were, no temps
    with pytest.raises(ValueError, match="class names"), PrelabelWriter(tmp_path / "other", CLASSES[:2], 2) as writer:
        writer.write(BATCHES[0])
    assert {p.name for p in tmp_path.iterdir()} == set(before)


def test_an_empty_pool_gives_files_with_the_header_only(tmp_path):
    with PrelabelWriter(tmp_path / "p", CLASSES, 1) as writer:
        pass
    assert writer.rows == 0
    assert (tmp_path / "p.csv").read_text().splitlines() == ["image,path,predicted,confidence,top1,top1_prob"]
    assert len(pd.read_parquet(tmp_path / "p.parquet")) == 0


def test_the_csv_escapes_text_a_spreadsheet_would_run_and_the_parquet_file_keeps_it(tmp_path):
    classes = ["=cmd|' /C calc'!A0", "-1", "+x", "cat"]
    ids = ['=HYPERLINK("http://x")-1.png', "@sum.png", "plain.png"]
    with PrelabelWriter(tmp_path / "p", classes, top_k=3) as writer:
        batch = prediction(
            ids, [[0, 1, 2], [1, 3, 0], [2, 0, 3]], [[0.5, 0.3, 0.2], [0.9, 0.05, 0.01], [0.4, 0.3, 0.2]]
        )
        writer.write(batch, paths=["-/a.png", "\t/b.png", "/c.png"])
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[1][:5] == [
        '\'=HYPERLINK("http://x")-1.png',
        "'-/a.png",
        "'=cmd|' /C calc'!A0",
        "0.5",
        "'=cmd|' /C calc'!A0",
    ]
    assert rows[2][:4] == ["'@sum.png", "'\t/b.png", "'-1", "0.9"]
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    table = pd.read_parquet(tmp_path / "p.parquet")  # the names as they are
    assert table["image"].tolist() == ids and table["predicted"].tolist() == ["=cmd|' /C calc'!A0", "-1", "+x"]
    assert table["path"].tolist() == ["-/a.png", "\t/b.png", "/c.png"]
    from_csv = pd.read_csv(tmp_path / "p.csv", keep_default_na=False, dtype={"predicted": str})
    assert from_csv["predicted"].map(unescape_cell).tolist() == table["predicted"].tolist()
    assert from_csv["confidence"].dtype == np.float64  # numbers stay numbers
