"""Tests for rlplastic.augment: the crop equals DrQ-v2's grid_sample random shift."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from rlplastic.augment import AUGMENTATIONS, NoAug, RandomShift, make_augmentation

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "aug"


def drqv2_random_shift(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug.forward (drqv2.py), with the random draw replaced by ``shifts`` (N, 2).

    ``shifts[:, 0]`` moves the grid's first coordinate, which grid_sample reads as x (width).
    """
    n, _, h, w = x.shape
    assert h == w
    x = F.pad(x, (pad, pad, pad, pad), "replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=x.device, dtype=x.dtype)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
    base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)
    shift = shifts.to(x.dtype).view(n, 1, 1, 2) * (2.0 / (h + 2 * pad))
    grid = base_grid + shift
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def all_shifts(pad: int) -> torch.Tensor:
    r = torch.arange(2 * pad + 1)
    return torch.cartesian_prod(r, r)  # every (dx, dy), (2 * pad + 1)^2 rows


@pytest.mark.parametrize(("pad", "size"), [(4, 84), (2, 11)])
def test_crop_equals_grid_sample_float64(pad: int, size: int) -> None:
    torch.manual_seed(0)
    shifts = all_shifts(pad)
    x = torch.rand(shifts.shape[0], 3, size, size, dtype=torch.float64)
    out = RandomShift(pad)(x, shifts)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, drqv2_random_shift(x, pad, shifts), rtol=0, atol=1e-9)


def test_crop_matches_float32_grid_sample_up_to_its_rounding() -> None:
    # In float32 grid_sample's coordinate arithmetic rounds to ~1e-5 of a pixel, so on [0, 1] images
    # the reference itself deviates from the exact crop by up to ~1.5e-5.
    torch.manual_seed(1)
    shifts = all_shifts(4)
    x = torch.rand(shifts.shape[0], 9, 84, 84)
    out = RandomShift(4)(x, shifts)
    ref = drqv2_random_shift(x, 4, shifts)
    torch.testing.assert_close(out, ref, rtol=0, atol=5e-5)
    # The crop itself is exact: bit-equal to slicing the replicate-padded image.
    padded = F.pad(x, (4, 4, 4, 4), "replicate")
    sliced = torch.stack([padded[i, :, dy : dy + 84, dx : dx + 84] for i, (dx, dy) in enumerate(shifts.tolist())])
    assert torch.equal(out, sliced)


def test_uint8_in_uint8_out() -> None:
    torch.manual_seed(2)
    x = torch.randint(0, 256, (64, 9, 84, 84), dtype=torch.uint8)
    aug = RandomShift(4)
    shifts = aug.sample_shifts(64)
    out = aug(x, shifts)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, aug(x.float(), shifts).to(torch.uint8))
    assert torch.equal(out, drqv2_random_shift(x.double(), 4, shifts).round().to(torch.uint8))


def test_identity_shift_and_explicit_offsets() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    aug = RandomShift(2)
    assert torch.equal(aug(x, torch.tensor([[2, 2], [2, 2]])), x)
    # dx = 4 moves content left by 2 columns (replicating the right edge); dy = 0 moves it down by 2
    # rows (replicating the top edge).
    out = aug(x, torch.tensor([[4, 0], [4, 0]]))
    src = x[0, 0]
    assert torch.equal(out[0, 0, 2:, :4], src[:4, 2:])
    assert torch.equal(out[0, 0, 0], torch.cat([src[0, 2:], src[0, -1:].repeat(2)]))
    assert torch.equal(RandomShift(0)(x), x)


def test_all_81_shifts_reachable() -> None:
    torch.manual_seed(3)
    h = 84
    # Unique pixel values let the shift be read back from one interior output pixel.
    x = torch.arange(h * h, dtype=torch.int64).view(1, 1, h, h).expand(4000, 1, h, h)
    out = RandomShift(4)(x)
    src = out[:, 0, 42, 42]
    dy, dx = src // h - 42 + 4, src % h - 42 + 4
    seen = set(zip(dx.tolist(), dy.tolist(), strict=True))
    assert seen == {(a, b) for a in range(9) for b in range(9)}
    counts = torch.bincount(dy * 9 + dx, minlength=81)
    assert counts.min() > 20  # ~49 expected each: uniform, no shift starved


def test_seeded_determinism() -> None:
    x = torch.rand(32, 3, 20, 20)
    aug = RandomShift(4)
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    torch.manual_seed(1)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noaug_is_identity() -> None:
    x = torch.randint(0, 256, (4, 9, 84, 84), dtype=torch.uint8)
    assert NoAug()(x) is x
    assert make_augmentation("none")(x) is x


def test_registry_and_configs() -> None:
    assert set(AUGMENTATIONS.names()) == {"none", "shift"} and "shift" in AUGMENTATIONS
    aug = make_augmentation("shift", pad=3)
    assert isinstance(aug, RandomShift) and aug.pad == 3
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["name"] == path.stem
        assert isinstance(make_augmentation(**cfg), AUGMENTATIONS.get(path.stem))
    assert make_augmentation(**yaml.safe_load((CONFIG_DIR / "shift.yaml").read_text())).pad == 4


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown aug 'crop': allowed are \['none', 'shift'\]"):
        make_augmentation("crop")
    with pytest.raises(ValueError, match=r"unknown aug.none key\(s\) \['pad'\]: allowed are \[\]"):
        make_augmentation("none", pad=4)
    with pytest.raises(ValueError, match=r"^aug.shift: pad must be an int >= 0, got -1$"):
        make_augmentation("shift", pad=-1)
    with pytest.raises(ValueError, match="pad must be"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="pad must be"):
        RandomShift(2.5)  # type: ignore[arg-type]
    aug = RandomShift(4)
    with pytest.raises(ValueError, match="4-D"):
        aug(torch.zeros(9, 84, 84))
    x = torch.zeros(2, 3, 10, 10)
    with pytest.raises(ValueError, match=r"\(2, 2\) int64"):
        aug(x, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(2, 2\) int64"):
        aug(x, torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        aug(x, torch.tensor([[0, 9], [0, 0]]))
