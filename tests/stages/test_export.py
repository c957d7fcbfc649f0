"""`python -m stages.export`: writes each format from a stage directory (or its weights file), takes the image size
from the stage's manifest, never replaces a file without --overwrite, and ends bad input with one line, exit 2."""

import importlib.util
import json

import onnx
import pytest
import torch
import torchvision

from stages.export import main
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.weights import WEIGHTS_FILE, load_classifier, save_classifier, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = EncoderConfig(depth=18, width=0.125, small_images=True, head_layers=2)
CLASSES = ["zero", "one", "two"]


def stage_dir(path, architecture=TINY, proj_selector=1, image_size=16):
    """A finetune output as the pipeline leaves it: the classifier and a manifest with the stage's config."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = classifier_for(architecture, proj_selector, len(CLASSES))
    save_classifier(model, path / WEIGHTS_FILE, architecture, proj_selector, CLASSES)
    if image_size is not None:
        (path / "manifest.json").write_text(json.dumps({"config": {"image_size": image_size}}))
    return path


def exit_message(capsys, argv) -> str:
    """The one line on stderr of a run that must end with exit status 2."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stages.export: error: "), err
    return err


def test_onnx_goes_to_export_in_the_stage_dir_at_the_manifests_image_size(tmp_path, capsys):
    finetune = stage_dir(tmp_path / "finetune")
    main([str(finetune), "--format", "onnx"])

    printed = json.loads(capsys.readouterr().out)
    out = finetune / "export" / "model.onnx"
    assert printed == {
        "format": "onnx",
        "out": str(out),
        "source": str(finetune / WEIGHTS_FILE),
        "num_classes": 3,
        "image_size": 16,
    }
    model = onnx.load(out)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 16, 16]
    assert json.loads({p.key: p.value for p in model.metadata_props}["class_names"]) == CLASSES


def test_safetensors_from_a_weights_file_of_any_name_to_out(tmp_path, capsys):
    finetune = stage_dir(tmp_path / "finetune", image_size=None)
    (finetune / WEIGHTS_FILE).rename(finetune / "student.safetensors")
    main(
        [str(finetune / "student.safetensors"), "--format", "safetensors", "--out", str(tmp_path / "copy.safetensors")]
    )

    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "copy.safetensors")
    assert load_classifier(tmp_path / "copy.safetensors").class_names == CLASSES


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    finetune = stage_dir(tmp_path / "finetune")
    out = finetune / "export" / "model.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"someone's file")

    message = exit_message(capsys, [str(finetune), "--format", "safetensors"])
    assert f"{out} exists: pass --overwrite to replace it" in message
    assert out.read_bytes() == b"someone's file"

    main([str(finetune), "--format", "safetensors", "--overwrite"])
    assert load_classifier(out).class_names == CLASSES
    assert sorted(path.name for path in out.parent.iterdir()) == ["model.safetensors"]  # no temporary left


def test_torchvision_from_a_resnet50_with_a_note_where_its_logits_differ(tmp_path, capsys):
    resnet50 = EncoderConfig(depth=50, width=1.0, small_images=False)
    baseline = stage_dir(tmp_path / "baseline", resnet50, proj_selector=0, image_size=32)
    main([str(baseline), "--format", "torchvision"])

    captured = capsys.readouterr()
    assert json.loads(captured.out)["torchvision_model"] == "torchvision.models.resnet50"
    assert "note: torchvision's logits equal this model's only at image sizes S" in captured.err
    assert "at 32 px they differ slightly" in captured.err
    state = torch.load(baseline / "export" / "model.torchvision.pt", weights_only=True)
    torchvision.models.resnet50(num_classes=3).load_state_dict(state, strict=True)


def test_a_missing_dir_is_one_line_exit_2(tmp_path, capsys):
    message = exit_message(capsys, [str(tmp_path / "nowhere"), "--format", "onnx"])
    assert "nowhere does not exist: pass the output directory of a finetune, baseline or distill stage" in message


def test_a_pretrain_dir_is_not_a_classifier(tmp_path, capsys):
    save_pretrained(build_pretrain_model(TINY), tmp_path / WEIGHTS_FILE, TINY)
    message = exit_message(capsys, [str(tmp_path), "--format", "safetensors"])
    assert "is not a classifier" in message and "finetune, baseline or distill" in message


def test_an_architecture_torchvision_cannot_take_is_refused(tmp_path, capsys):
    finetune = stage_dir(tmp_path / "finetune")
    message = exit_message(capsys, [str(finetune), "--format", "torchvision"])
    assert "torchvision's ResNets cannot hold this classifier" in message and "safetensors or onnx" in message
    assert not (finetune / "export" / "model.torchvision.pt").exists()


def test_onnx_without_a_manifest_needs_the_image_size(tmp_path, capsys):
    finetune = stage_dir(tmp_path / "finetune", image_size=None)
    message = exit_message(capsys, [str(finetune), "--format", "onnx"])
    assert "pass --image-size" in message


def test_onnx_without_onnxscript_says_what_to_install(tmp_path, capsys, monkeypatch):
    finetune = stage_dir(tmp_path / "finetune")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxscript" else find_spec(name))
    with pytest.raises(SystemExit) as stopped:
        main([str(finetune), "--format", "onnx"])
    assert "ONNX export needs onnxscript: pip install 'simclrv2-pipeline[export]'" in str(stopped.value.code)
    assert not (finetune / "export" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        ([], "the following arguments are required: --format"),
        (["--format", "onnx", "--image-size", "0"], "expected a positive number of pixels, got '0'"),
    ],
)
def test_bad_flags_are_one_line_exit_2(tmp_path, capsys, flags, expected):
    assert expected in exit_message(capsys, [str(tmp_path), *flags])


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    assert "python -m stages.export runs/finetune --format onnx" in capsys.readouterr().out
