"""A source reader calls bad data a `DataError` (a mistake: exit 2, never retried), but lets a fault of the
environment through with its own type (stages/failures.py decides what the pipeline does with it): a permission
denied, a full disk, out of memory, the network. The loader it calls is made to fail here."""

import errno

import datasets
import httpx2
import pytest
from datasets.exceptions import DatasetGenerationError
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from stages.data.sources import DataConfig, DataError, load_splits
from stages.failures import notes_of

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

FAULTS = {
    "permission denied": lambda: PermissionError(errno.EACCES, "Permission denied", "/data/saved/state.json"),
    "disk full": lambda: OSError(errno.ENOSPC, "No space left on device", "/cache/x.arrow"),
    "I/O error": lambda: OSError(errno.EIO, "Input/output error", "/nfs/data/x.arrow"),
    "out of memory": MemoryError,
    "connection reset": lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
}


def failing(error: BaseException):
    def load(*args, **kwargs):
        raise error

    return load


@pytest.mark.parametrize("make", FAULTS.values(), ids=FAULTS.keys())
def test_load_from_disk_lets_an_environment_fault_through_with_its_type(make, tmp_path, monkeypatch):
    fault = make()
    monkeypatch.setattr(datasets, "load_from_disk", failing(fault))
    with pytest.raises(type(fault)) as raised:
        load_splits(DataConfig(source=f"disk:{tmp_path}"))
    assert raised.value is fault and not isinstance(raised.value, DataError)
    assert f"reading the data source 'disk:{tmp_path}'" in notes_of(raised.value)


@pytest.mark.parametrize("make", FAULTS.values(), ids=FAULTS.keys())
def test_a_loader_error_caused_by_an_environment_fault_raises_the_fault(make, tmp_path, monkeypatch):
    """`datasets` wraps what stopped it while building its cache (a full disk, most often) in its own error."""
    fault = make()

    def build(*args, **kwargs):
        try:
            raise fault
        except BaseException as error:
            raise DatasetGenerationError("An error occurred while generating the dataset") from error

    monkeypatch.setattr(datasets, "load_dataset", build)
    with pytest.raises(type(fault)) as raised:
        load_splits(DataConfig(source=f"imagefolder:{tmp_path}"))
    assert raised.value is fault and "reading the data source 'imagefolder:" in notes_of(raised.value)


@pytest.mark.parametrize(
    "complaint",
    [
        KeyError("_data_files"),
        OSError("Couldn't deserialize thrift: TProtocolException: Invalid data"),  # pyarrow: no errno, the file's fault
        DatasetGenerationError("An error occurred while generating the dataset"),
    ],
    ids=["missing key", "errno-less OSError", "loader's own error"],
)
def test_a_complaint_about_the_data_is_still_a_data_error(complaint, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_from_disk", failing(complaint))
    with pytest.raises(DataError, match=rf"disk:{tmp_path}: datasets.load_from_disk failed"):
        load_splits(DataConfig(source=f"disk:{tmp_path}"))


def test_a_malformed_saved_dataset_is_a_data_error(tmp_path):
    datasets.Dataset.from_dict({"label": [0, 1]}).save_to_disk(tmp_path / "saved")
    for arrow in (tmp_path / "saved").glob("*.arrow"):
        arrow.write_bytes(b"not an arrow file")
    with pytest.raises(DataError, match="ArrowInvalid"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))


def test_a_missing_saved_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="save_to_disk"):
        load_splits(DataConfig(source=f"disk:{tmp_path}"))  # a folder, but no dataset in it


# --- the hub -------------------------------------------------------------------------------------------------------


def hub_answer(status: int, kind: type[HfHubHTTPError] = HfHubHTTPError) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://huggingface.co/api/datasets/someone/x")
    return kind(f"{status} from the hub", response=httpx2.Response(status, request=request))


@pytest.fixture
def online_hub(monkeypatch):
    """A hub that answers the probe, so that `load_dataset` is what fails."""
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, name, timeout: None)


@pytest.mark.usefixtures("online_hub")
@pytest.mark.parametrize(
    "fault",
    [ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), hub_answer(503)],
    ids=["connection reset", "503"],
)
def test_the_hub_failing_while_loading_is_the_networks_fault(fault, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", failing(fault))
    with pytest.raises(type(fault)) as raised:
        load_splits(DataConfig(source="hub:someone/x"))
    assert raised.value is fault and "save_to_disk" in notes_of(raised.value)  # what to do if it lasts


@pytest.mark.usefixtures("online_hub")
def test_a_dataset_the_hub_does_not_have_is_a_data_error(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", failing(hub_answer(404, RepositoryNotFoundError)))
    with pytest.raises(DataError, match="hub:someone/x: could not load 'someone/x' from the hub"):
        load_splits(DataConfig(source="hub:someone/x"))


def test_the_hub_probe_answered_with_503_is_the_networks_fault(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", failing(hub_answer(503)))
    monkeypatch.setattr(datasets, "load_dataset", failing(AssertionError("the probe failed: not called")))
    with pytest.raises(HfHubHTTPError) as raised:
        load_splits(DataConfig(source="hub:someone/x"))
    assert "HF_HUB_OFFLINE=1" in notes_of(raised.value)
