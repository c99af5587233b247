"""Tests for the SRM residual front-end: kernel values checked against hand computations, eq. 5,
gradient flow through the straight-through rounding, and shapes with torchvision backbones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import alexnet, inception_v3, resnet18
from torchvision.models.inception import InceptionOutputs

from cxrdistill.models.srm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MINMAX_GROUPS,
    SRM_KERNEL_NAMES,
    FrontendModel,
    SRMFrontend,
    round_ste,
    srm_kernels,
)

SIZE = 16
ROW = COL = 8  # an interior pixel, at least 2 away from every border


def as_input(grey: Tensor) -> Tensor:
    """A (H, W) grey image in 0..255 as the front-end receives it: 3 channels, ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((grey / 255.0).expand(3, -1, -1) - mean).div(std).unsqueeze(0)


def fixed_responses_at(grey: Tensor, row: int = ROW, col: int = COL) -> dict[str, float]:
    """Raw responses of the named maps at one pixel, with quantisation and truncation left out."""
    frontend = SRMFrontend(learned_residuals=2)
    values = frontend.raw_residuals(as_input(grey))[0, :, row, col]
    return dict(zip(frontend.residual_map_names, values.tolist(), strict=True))


def grid() -> tuple[Tensor, Tensor]:
    """Row and column coordinates of a SIZE x SIZE image."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return rows.float(), cols.float()


def test_thirty_named_distinct_kernels() -> None:
    kernels = srm_kernels()
    assert kernels.shape == (30, 5, 5)
    assert len(set(SRM_KERNEL_NAMES)) == len(SRM_KERNEL_NAMES) == 30
    flat = kernels.flatten(1)
    distances = torch.cdist(flat, flat) + torch.eye(30)
    assert distances.min() > 0.1
    assert torch.allclose(flat.sum(dim=1), torch.zeros(30), atol=1e-6)
    assert all(member in SRM_KERNEL_NAMES for _, members in MINMAX_GROUPS for member in members)


def test_constant_image_gives_zero_everywhere() -> None:
    frontend = SRMFrontend(learned_residuals=4, learned_kernel_size=5)
    maps = frontend.raw_residuals(as_input(torch.full((SIZE, SIZE), 137.0)))
    assert maps.abs().max() < 1e-3  # borders included, thanks to replicate padding


def test_linear_ramp() -> None:
    rows, cols = grid()
    got = fixed_responses_at(3.0 * cols + 5.0 * rows + 20.0)
    # First order: the neighbour minus the centre, i.e. the slope along the direction.
    first = {
        "1st_right": 3.0,
        "1st_left": -3.0,
        "1st_down": 5.0,
        "1st_up": -5.0,
        "1st_down_right": 8.0,
        "1st_up_left": -8.0,
        "1st_down_left": 2.0,
        "1st_up_right": -2.0,
    }
    for name in SRM_KERNEL_NAMES:
        assert got[name] == pytest.approx(first.get(name, 0.0), abs=2e-3), name
    assert got["min_1st_hv"] == pytest.approx(3.0, abs=2e-3)
    assert got["max_1st_hv"] == pytest.approx(5.0, abs=2e-3)


def test_third_order_on_a_cubic() -> None:
    # (x[-1] - 3 x[0] + 3 x[1] - x[2]) / 3 is minus a third of the third difference, which is 6 for x^3.
    _, cols = grid()
    got = fixed_responses_at((cols - COL) ** 3 + 100.0)
    assert got["3rd_right"] == pytest.approx(-2.0, abs=2e-2)
    assert got["3rd_left"] == pytest.approx(2.0, abs=2e-2)
    assert got["3rd_down"] == pytest.approx(0.0, abs=2e-2)
    assert got["3rd_up"] == pytest.approx(0.0, abs=2e-2)


def test_checkerboard_interior_pixel() -> None:
    rows, cols = grid()
    board = 100.0 + 50.0 * (-1.0) ** (rows + cols)  # +50 at (ROW, COL), -50 at its 4-neighbours
    got = fixed_responses_at(board)
    expected = {
        "1st_right": -100.0,  # -50 - 50
        "1st_down_right": 0.0,  # diagonal neighbour has the centre's value
        "2nd_horizontal": -100.0,  # (-50 - 50 - 2 * 50) / 2
        "2nd_diagonal": 0.0,
        "3rd_right": -400.0 / 3,  # (-50 - 3 * 50 + 3 * -50 - 50) / 3
        "square3x3": -200.0,  # (4 corners * -50 + 4 edges * 2 * -50 - 4 * 50) / 4
        "edge3x3_up": -150.0,  # (-1 - 2 - 1 - 2 - 4 - 2) * 50 / 4
        "square5x5": -400.0,  # -(8 + 24 + 32 + 24 + 8) * 50 / 12
        "edge5x5_left": -800.0 / 3,  # -(8 + 24 + 32) * 50 / 12
        "min_2nd_hv": -100.0,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=2e-2), name


@pytest.mark.parametrize(
    ("name", "offset", "tap"),
    [
        ("1st_right", (0, 1), 1.0),
        ("1st_right", (0, -1), 0.0),
        ("1st_up_left", (-1, -1), 1.0),
        ("2nd_antidiagonal", (1, -1), 0.5),
        ("3rd_down", (2, 0), -1.0 / 3),
        ("3rd_down", (-1, 0), 1.0 / 3),
        ("edge3x3_down", (1, 0), 0.5),
        ("edge3x3_up", (1, 0), 0.0),
        ("edge3x3_right", (-1, 1), -0.25),
        ("edge5x5_up", (-2, -2), -1.0 / 12),
        ("edge5x5_down", (-2, -2), 0.0),
        ("square5x5", (1, 0), 8.0 / 12),
    ],
)
def test_orientation_by_impulse(name: str, offset: tuple[int, int], tap: float) -> None:
    # A single bright pixel at `offset` from the observed pixel reads out the kernel tap there.
    grey = torch.full((SIZE, SIZE), 10.0)
    grey[ROW + offset[0], COL + offset[1]] += 120.0
    assert fixed_responses_at(grey)[name] == pytest.approx(120.0 * tap, abs=2e-2)


def test_learned_residual_is_weighted_directional_differences() -> None:
    torch.manual_seed(0)
    frontend = SRMFrontend(learned_residuals=3, learned_kernel_size=3)
    grey = torch.rand(SIZE, SIZE) * 255.0
    got = frontend.raw_residuals(as_input(grey))[0, frontend.residual_map_names.index("learned_1"), ROW, COL]
    neighbours = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    w = frontend.residual_weights[1].tolist()
    centre = grey[ROW, COL]
    expected = sum(
        wp * (grey[ROW + dy, COL + dx] - centre) for wp, (dy, dx) in zip(w, neighbours, strict=True)
    )
    assert got.item() == pytest.approx(float(expected), abs=1e-2)


@pytest.mark.parametrize("threshold", [2.0, 3.0])
@pytest.mark.parametrize("quantize", [True, False])
def test_truncation_bounds_the_maps(threshold: float, quantize: bool) -> None:
    torch.manual_seed(0)
    frontend = SRMFrontend(truncation=threshold, quant_step=1.5, quantize=quantize)
    maps = frontend.residual_maps(as_input(torch.rand(SIZE, SIZE) * 255.0))
    assert maps.abs().max() <= threshold
    assert maps.abs().max() == threshold  # random noise saturates the clamp somewhere
    is_integer = torch.equal(maps, maps.round())
    assert is_integer == quantize


def test_round_ste_passes_gradient_unchanged() -> None:
    x = torch.tensor([0.2, 1.7, -2.6], requires_grad=True)
    y = round_ste(x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(y.detach(), torch.tensor([0.0, 2.0, -3.0]))
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_gradients_reach_learned_weights_and_projection() -> None:
    torch.manual_seed(0)
    frontend = SRMFrontend(learned_residuals=4)
    grey = 128.0 + torch.randn(2, SIZE, SIZE)  # small residuals: mostly inside the clamp
    x = torch.cat([as_input(g) for g in grey])
    loss = (frontend(x) * torch.randn(2, 3, SIZE, SIZE)).sum()
    loss.backward()
    assert frontend.residual_weights.grad is not None
    assert (frontend.residual_weights.grad.abs().sum(dim=1) > 0).all()
    assert frontend.projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("height", "width", "kwargs"),
    [
        (17, 23, {}),
        (32, 32, {"learned_kernel_size": 5, "concat_image": False}),
        (64, 48, {"learned_residuals": 0, "out_channels": 1}),
    ],
)
def test_output_shape(height: int, width: int, kwargs: dict[str, int | bool]) -> None:
    frontend = SRMFrontend(**kwargs)
    out = frontend(torch.randn(2, 3, height, width))
    assert out.shape == (2, kwargs.get("out_channels", 3), height, width)


def test_default_projection_starts_as_identity_on_the_image() -> None:
    frontend = SRMFrontend()
    x = torch.randn(1, 3, SIZE, SIZE)
    residual_part = frontend.projection.weight[:, : len(frontend.residual_map_names)]
    assert 0 < residual_part.abs().max() < 0.1
    frontend.projection.weight.data[:, : len(frontend.residual_map_names)] = 0.0
    assert torch.allclose(frontend(x), x, atol=1e-6)


@pytest.mark.parametrize(("factory", "size"), [(alexnet, 64), (resnet18, 64)])
@torch.no_grad()
def test_frontend_model_logits(factory: Callable[..., nn.Module], size: int) -> None:
    torch.manual_seed(0)
    model = FrontendModel(SRMFrontend(), factory(num_classes=2))
    x = torch.randn(2, 3, size, size)
    for train in (False, True):
        model.train(train)
        assert model(x).shape == (2, 2)


@torch.no_grad()
def test_frontend_model_passes_inception_outputs_through() -> None:
    torch.manual_seed(0)
    backbone = inception_v3(num_classes=2, aux_logits=True, init_weights=False)
    model = FrontendModel(SRMFrontend(), backbone)
    assert model.fc is backbone.fc  # attribute look-ups fall through to the backbone
    assert model.aux_logits is True
    model.eval()
    assert model(torch.randn(2, 3, 75, 75)).shape == (2, 2)
    model.train()
    out = model(torch.randn(2, 3, 299, 299))  # the auxiliary head needs full-size input
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == (2, 2)
    assert out.aux_logits.shape == (2, 2)


def test_a_few_sgd_momentum_steps_change_the_learned_weights() -> None:
    torch.manual_seed(0)
    frontend = SRMFrontend(learned_residuals=4)
    model = nn.Sequential(frontend, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # eqs. 13-14
    before = frontend.residual_weights.detach().clone()
    projection_before = frontend.projection.weight.detach().clone()
    grey = 128.0 + 2.0 * torch.randn(4, SIZE, SIZE)
    x = torch.cat([as_input(g) for g in grey])
    labels = torch.tensor([0, 1, 0, 1])
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimiser.step()
    assert not torch.allclose(frontend.residual_weights, before)
    assert not torch.allclose(frontend.projection.weight, projection_before)
