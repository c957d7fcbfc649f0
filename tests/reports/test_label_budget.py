"""What the report says, assembled once from the manifests."""

from reports.inputs import read_manifests
from reports.label_budget import assemble
from tests.reports.report_fixtures import CLASSIFIERS, SETTINGS, make_run


def test_assembled_from_the_manifests(report):
    assert len(report.models) == len(CLASSIFIERS)
    assert report.savings["kind"].tolist() == ["finetune", "distill", "finetune", "distill"]
    assert report.compute["stage"].tolist()[-1] == "total"
    assert (report.num_train, report.num_classes) == (2000, 10)
    assert report.encoder is not None and report.encoder.linear_eval_top1 == 0.9


def test_budgets_by_labels(report):
    assert report.budgets == [("20labels", 20), ("10pct", 200), ("100pct", 2000)]
    assert report.label_cost(200) == 50.0


def test_test_sizes_are_the_distinct_sizes(tmp_path, report):
    assert report.test_sizes == [500]
    without_encoder = assemble(read_manifests(make_run(tmp_path / "run", evaluate=False)), SETTINGS)
    assert without_encoder.encoder is None and without_encoder.test_sizes == [500]
