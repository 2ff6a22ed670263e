"""model=cnn1d: the MNIST-1D paper's reference CNN, sizes from the data."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from losslab import CONF_DIR
from losslab.models import cnn1d
from losslab.models.dense import ModelConfigError


def test_the_papers_shape_three_stride_2_convs_of_25_channels_then_a_linear_head():
    m = cnn1d(40, 10)
    convs = [layer for layer in m.modules() if isinstance(layer, torch.nn.Conv1d)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3]
    assert all(c.out_channels == 25 and c.stride == (2,) and c.padding == (1,) for c in convs)
    assert convs[0].in_channels == 1
    assert m.out.in_features == 125 and m.out.out_features == 10  # 25 channels x 5 positions on length 40
    assert sum(p.numel() for p in m.parameters()) == 5210  # the paper's ConvBase count


def test_forward_reads_n_by_l_inputs_as_one_channel_and_returns_logits():
    torch.manual_seed(0)
    m = cnn1d(40, 7)
    x = torch.randn(6, 40, requires_grad=True)
    out = m(x)
    assert out.shape == (6, 7)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert cnn1d(64, 10)(torch.randn(2, 64)).shape == (2, 10)  # any length the kernels fit


def test_config_builds_it_with_sizes_from_the_caller():
    node = OmegaConf.load(CONF_DIR / "model" / "cnn1d.yaml")
    m = instantiate(node, in_features=40, out_features=10)
    assert m(torch.zeros(3, 40)).shape == (3, 10)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"channels": 0}, "model.channels=0"),
        ({"kernel_sizes": []}, "model.kernel_sizes"),
        ({"kernel_sizes": [5, 5, 5, 5], "padding": 0}, "shrink to nothing"),
    ],
)
def test_bad_options_are_refused(kwargs, says):
    with pytest.raises(ModelConfigError, match=says):
        cnn1d(40, 10, **kwargs)
