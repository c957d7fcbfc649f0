"""Projection head layout and the classifier built from the middle of the head."""

import pytest
import torch
from torch import nn

from stages import ProjectionHead, SimCLRModel, build_classifier, build_encoder


def test_head_layers_widths_and_bn_placement():
    head = ProjectionHead(64)
    assert len(head.layers) == 3
    for layer in head.layers[:2]:
        linear, bn, relu = layer
        assert (linear.in_features, linear.out_features, linear.bias) == (64, 64, None)
        assert isinstance(bn, nn.BatchNorm1d) and bn.bias.requires_grad
        assert isinstance(relu, nn.ReLU)
    linear, bn = head.layers[2]
    assert (linear.in_features, linear.out_features, linear.bias) == (64, 128, None)
    assert not bn.bias.requires_grad  # no beta
    assert abs(head.layers[0][0].weight.std().item() - 0.01) < 0.001


def test_head_returns_every_layer_output():
    head = ProjectionHead(32, num_layers=3, out_dim=16)
    h = torch.randn(8, 32)
    outputs = head(h)
    assert [o.shape[1] for o in outputs] == [32, 32, 32, 16]
    assert outputs[0] is h
    assert (outputs[1] >= 0).all()  # ReLU(BN(W1 h))
    assert (outputs[3] < 0).any()  # the last layer has no ReLU


def test_simclr_model_returns_last_head_output():
    encoder = build_encoder(18, 0.25, small_images=True)
    model = SimCLRModel(encoder, ProjectionHead(encoder.out_dim))
    assert model(torch.rand(4, 3, 16, 16)).shape == (4, 128)


@pytest.mark.parametrize(("selector", "feature_dim", "kept"), [(0, 64, 0), (1, 64, 1), (2, 64, 2), (3, 128, 3)])
def test_classifier_keeps_head_up_to_selector(selector, feature_dim, kept):
    encoder = build_encoder(18, 0.125, small_images=True)
    head = ProjectionHead(encoder.out_dim)
    classifier = build_classifier(encoder, head, num_classes=10, proj_selector=selector)
    assert len(classifier.head_layers) == kept
    assert classifier.fc.in_features == feature_dim
    assert torch.all(classifier.fc.weight == 0) and torch.all(classifier.fc.bias == 0)
    images = torch.rand(4, 3, 16, 16)
    assert torch.equal(classifier(images), torch.zeros(4, 10))  # zero-initialised classifier
    classifier.eval()
    head.eval()
    assert torch.allclose(classifier.features(images), head(encoder(images))[selector])


def test_default_selector_is_the_middle_of_the_head_and_shares_weights():
    encoder = build_encoder(18, 0.125, small_images=True)
    head = ProjectionHead(encoder.out_dim)
    classifier = build_classifier(encoder, head, num_classes=3)
    assert classifier.head_layers[0] is head.layers[0]
    assert classifier.encoder is encoder


def test_supervised_classifier_without_head():
    encoder = build_encoder(18, 0.125, small_images=True)
    classifier = build_classifier(encoder, None, num_classes=5, proj_selector=0)
    assert classifier.fc.in_features == encoder.out_dim


@pytest.mark.parametrize(
    ("selector", "classes", "culprit"), [(4, 10, "proj_selector"), (-1, 10, "proj_selector"), (1, 1, "num_classes")]
)
def test_bad_classifier_arguments(selector, classes, culprit):
    encoder = build_encoder(18, 0.125, small_images=True)
    with pytest.raises(ValueError, match=culprit):
        build_classifier(encoder, ProjectionHead(encoder.out_dim), num_classes=classes, proj_selector=selector)
