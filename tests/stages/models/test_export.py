"""Export: torchvision's ResNet takes our weights strictly and gives our logits (at the sizes where its stem pool
agrees), the architectures it cannot hold are refused with why, and ONNX gives our logits through onnxruntime for
SK and non-SK classifiers, with the class names in its metadata."""

import json
from dataclasses import asdict

import onnx
import onnxruntime
import pytest
import torch
import torchvision
from safetensors import safe_open

from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.export import (
    export_onnx,
    export_safetensors,
    export_torchvision,
    torchvision_matches_at,
    torchvision_problems,
    torchvision_state_dict,
)
from stages.models.weights import LoadedClassifier, load_classifier, save_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET50 = EncoderConfig(depth=50, width=1.0, sk=False, small_images=False)
TINY = EncoderConfig(depth=18, width=0.125, small_images=True, head_layers=2)
TINY_SK = EncoderConfig(depth=50, width=0.0625, sk=True, small_images=False, head_layers=3)
CLASSES = ["cat", "dog", "emu"]


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics and affine terms and a nonzero linear layer: a fresh model's zero-init residual BNs and
    zero classifier would hide any mismatch."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        torch.nn.init.normal_(model.fc.weight, std=0.1)
        torch.nn.init.normal_(model.fc.bias, std=0.1)
    return model.eval()


def saved(tmp_path, architecture: EncoderConfig, proj_selector: int, classes=CLASSES) -> LoadedClassifier:
    torch.manual_seed(0)
    model = trained_like(classifier_for(architecture, proj_selector, len(classes)))
    save_classifier(model, tmp_path / "model.safetensors", architecture, proj_selector, classes)
    return load_classifier(tmp_path)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory) -> LoadedClassifier:
    return saved(tmp_path_factory.mktemp("resnet50"), RESNET50, 0)


def logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def test_torchvision_resnet50_takes_our_weights_strictly_and_gives_our_logits(resnet50):
    reference = torchvision.models.resnet50(num_classes=len(CLASSES))
    reference.load_state_dict(torchvision_state_dict(resnet50), strict=True)

    images = torch.rand(2, 3, 34, 34)  # the stem conv outputs 17 px: odd, where the max-pools agree
    assert torchvision_matches_at(34)
    ours = logits(resnet50.model, images)
    torch.testing.assert_close(logits(reference, images), ours, atol=1e-5, rtol=1e-5)
    assert ours.abs().max() > 1  # a real signal, not zeros


def test_at_other_sizes_the_stem_pool_moves_torchvisions_logits_a_little(resnet50):
    reference = torchvision.models.resnet50(num_classes=len(CLASSES))
    reference.load_state_dict(torchvision_state_dict(resnet50), strict=True)
    images = torch.rand(2, 3, 32, 32)  # the stem conv outputs 16 px: TF "SAME" pads bottom/right, torch both sides

    assert not torchvision_matches_at(32)
    difference = (logits(reference, images) - logits(resnet50.model, images)).abs().max()
    assert difference > 1e-3
    assert [s for s in range(30, 40) if torchvision_matches_at(s)] == [30, 33, 34, 37, 38]


def test_the_torchvision_file_loads_with_torch_load(resnet50, tmp_path):
    export_torchvision(resnet50, tmp_path / "out" / "model.torchvision.pt")

    state = torch.load(tmp_path / "out" / "model.torchvision.pt", weights_only=True)
    torchvision.models.resnet50(num_classes=len(CLASSES)).load_state_dict(state, strict=True)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["model.torchvision.pt"]  # no temporary left


@pytest.mark.parametrize(
    ("architecture", "proj_selector", "reason"),
    [
        (EncoderConfig(depth=18, width=1.0, small_images=False), 0, "first block of layer1 a projection shortcut"),
        (EncoderConfig(depth=34, width=1.0, small_images=False), 0, "torchvision's resnet34 has none there"),
        (EncoderConfig(depth=200, width=1.0, small_images=False), 0, "torchvision has no resnet200"),
        (EncoderConfig(depth=50, width=2.0, small_images=False), 0, "its width is 2"),
        (EncoderConfig(depth=50, width=1.0, sk=True, small_images=False), 0, "Selective Kernels"),
        (EncoderConfig(depth=50, width=1.0, small_images=True), 0, "small-image stem"),
        (EncoderConfig(depth=50, width=1.0, small_images=False), 1, "keeps 1 projection-head layer"),
    ],
)
def test_what_torchvision_cannot_hold_is_named(architecture, proj_selector, reason):
    problems = torchvision_problems(architecture, proj_selector)
    assert len(problems) == 1
    assert reason in problems[0]


def test_a_classifier_torchvision_cannot_hold_is_refused_with_every_reason_and_what_to_do(tmp_path):
    loaded = saved(tmp_path, TINY_SK, 1)
    with pytest.raises(ValueError, match="cannot hold this classifier") as refused:
        torchvision_state_dict(loaded)
    message = str(refused.value)
    for reason in ("width is 0.0625", "Selective Kernels", "keeps 1 projection-head layer", "as safetensors or onnx"):
        assert reason in message
    assert "\n" not in message


def test_safetensors_export_is_our_weights_file_with_its_metadata(tmp_path):
    loaded = saved(tmp_path, TINY, 1)
    export_safetensors(loaded, tmp_path / "export" / "copy.safetensors")

    again = load_classifier(tmp_path / "export" / "copy.safetensors")
    assert (again.architecture, again.proj_selector, again.class_names) == (TINY, 1, CLASSES)
    assert (tmp_path / "export" / "copy.safetensors").read_bytes() == loaded.file.read_bytes()
    with safe_open(tmp_path / "export" / "copy.safetensors", "pt") as f:
        assert json.loads(f.metadata()["class_names"]) == CLASSES


def onnx_session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_logits(session: onnxruntime.InferenceSession, images: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


@pytest.mark.parametrize(
    ("architecture", "proj_selector", "image_size", "external_data"),
    [(TINY, 1, 16, True), (TINY_SK, 2, 32, None)],
    ids=["resnet18-small-stem-external-data", "sk-resnet50"],
)
def test_onnx_gives_our_logits_for_any_batch_with_the_class_names_in_its_metadata(
    tmp_path, architecture, proj_selector, image_size, external_data
):
    loaded = saved(tmp_path, architecture, proj_selector)
    loaded.model.train()
    export_onnx(loaded, tmp_path / "export" / "model.onnx", image_size, external_data=external_data)

    assert loaded.model.training  # the caller's mode is restored
    side_files = ["model.onnx.data"] if external_data else []  # the weights beside the graph, for models over 2 GB
    assert sorted(path.name for path in (tmp_path / "export").iterdir()) == ["model.onnx", *side_files]
    session = onnx_session(tmp_path / "export" / "model.onnx")
    for batch in (1, 5):
        images = torch.rand(batch, 3, image_size, image_size)
        torch.testing.assert_close(onnx_logits(session, images), logits(loaded.model, images), atol=1e-4, rtol=1e-4)
    model = onnx.load(tmp_path / "export" / "model.onnx")
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(metadata["class_names"]) == CLASSES
    assert json.loads(metadata["architecture"]) == asdict(architecture)
    assert (metadata["proj_selector"], metadata["image_size"]) == (str(proj_selector), str(image_size))
    assert "no mean/std normalisation" in metadata["input"]
    [image_input] = model.graph.input
    dims = image_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, image_size, image_size]
    assert [output.name for output in model.graph.output] == ["logits"]


def test_onnx_refuses_a_bad_image_size(tmp_path):
    loaded = saved(tmp_path, TINY, 0)
    with pytest.raises(ValueError, match="image_size must be a positive number of pixels, got 0"):
        export_onnx(loaded, tmp_path / "model.onnx", 0)
    assert not (tmp_path / "model.onnx").exists()
