"""The reference NoteCNN meets the assignment contract exactly."""
import pytest
import torch

from reference.model import NoteCNN

EXPECTED_PARAMS = {"conv1": 160, "conv2": 4_640, "conv3": 18_496, "conv4": 73_856, "fc": 22_539}


def test_parameter_counts_per_layer_and_total():
    model = NoteCNN()
    for name, expected in EXPECTED_PARAMS.items():
        got = sum(p.numel() for p in getattr(model, name).parameters())
        assert got == expected, name
    assert sum(p.numel() for p in model.parameters()) == 119_691
    assert sum(1 for _ in model.pool.parameters()) == 0


def test_block_output_shapes():
    model = NoteCNN()
    shapes = []
    model.pool.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
    logits = model(torch.zeros(3, 1, 64, 64))
    assert shapes == [(3, 16, 32, 32), (3, 32, 16, 16), (3, 64, 8, 8), (3, 128, 4, 4)]
    assert logits.shape == (3, 11)


@pytest.mark.parametrize("n_classes", [2, 11, 20])
def test_n_classes(n_classes):
    assert NoteCNN(n_classes)(torch.zeros(1, 1, 64, 64)).shape == (1, n_classes)


def test_state_dict_roundtrip_weights_only(tmp_path):
    model = NoteCNN()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    fresh = NoteCNN()
    fresh.load_state_dict(state)
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(model(x), fresh(x))
