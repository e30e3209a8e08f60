"""Image augmentations as ``nn.Module`` s on ``(N, C, H, W)`` batches.

Each augmentation is one class registered in :data:`AUGMENTATIONS` and selected by name through
:func:`make_augmentation` (one Hydra file per augmentation in ``configs/aug/``), so a new kind is one
class plus one YAML file. Modules accept uint8 or floating batches and return the input dtype;
augmenting uint8 before converting to float moves a quarter of the bytes and gives the same result
for crop-type augmentations.

Augmentations draw their randomness from the global torch RNG on the input's device, so
``torch.manual_seed`` makes them reproducible. To evaluate with a frozen draw of any augmentation, wrap the
call in ``torch.random.fork_rng()`` and seed inside it; :class:`RandomShift` also takes explicit shifts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlplastic.registry import Registry

__all__ = ["AUGMENTATIONS", "NoAug", "RandomShift", "make_augmentation"]


AUGMENTATIONS: Registry[nn.Module] = Registry("augmentation", "aug")
"""Augmentation classes by config name (``configs/aug/<name>.yaml``)."""


def _check_batch(x: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"augmentation input must be a 4-D (N, C, H, W) tensor, got {got}")


@AUGMENTATIONS.register("none")
class NoAug(nn.Module):
    """Identity augmentation (the "no augmentation" baseline).

    Returns its input unchanged, without copying: callers must not modify the result in place.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: Batch ``(N, C, H, W)``, any dtype.
        :return: ``x`` itself.
        """
        _check_batch(x)
        return x


@AUGMENTATIONS.register("shift")
class RandomShift(nn.Module):
    """DrQ-v2 random shift: replicate-pad by ``pad`` pixels, then crop back to ``H x W`` at a random offset.

    Each sample gets an independent integer shift ``(dx, dy)`` uniform on ``{0..2*pad}^2``; the output is
    ``out[n, :, y, x] = padded[n, :, y + dy, x + dx]``. DrQ-v2 computes this with ``F.grid_sample`` at
    pixel centres; an integer crop gives the same values (exactly, up to grid_sample's own float rounding)
    without interpolation. Replicate padding equals clamping the source index to the image, so the crop
    is one ``gather`` from the unpadded input with clamped indices: no padded copy is materialised.
    Non-square images are allowed (DrQ-v2 requires square ones).

    :param pad: Padding per side in pixels (``>= 0``; 0 makes the module an identity).
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an int >= 0, got {pad!r}")
        self.pad = pad

    def extra_repr(self) -> str:
        return f"pad={self.pad}"

    def sample_shifts(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Draw shifts as :meth:`forward` does, e.g. to freeze one augmentation draw for repeated use.

        :param n: Number of samples.
        :param device: Device of the shifts (that of the batch they will be applied to).
        :return: ``(n, 2)`` int64 tensor of ``(dx, dy)`` in ``[0, 2 * pad]``.
        """
        return torch.randint(0, 2 * self.pad + 1, (n, 2), device=device, dtype=torch.int64)

    def forward(self, x: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Shift every sample of the batch by its own integer offset.

        :param x: Batch ``(N, C, H, W)``, uint8 or floating.
        :param shifts: Optional ``(N, 2)`` int64 tensor of ``(dx, dy)`` in ``[0, 2 * pad]`` on ``x``'s
            device (column shift first, as in DrQ-v2's grid); ``(pad, pad)`` is the identity. When
            ``None``, shifts are drawn with :meth:`sample_shifts` from the global torch RNG. Explicit
            shifts are range-checked, which synchronises with the device.
        :return: Shifted batch, same shape and dtype as ``x``.
        """
        _check_batch(x)
        n, c, h, w = x.shape
        if shifts is None:
            shifts = self.sample_shifts(n, x.device)
        else:
            if (
                not isinstance(shifts, torch.Tensor)
                or shifts.shape != (n, 2)
                or shifts.dtype != torch.int64
                or shifts.device != x.device
            ):
                got = (
                    f"shape {tuple(shifts.shape)}, dtype {shifts.dtype}, device {shifts.device}"
                    if isinstance(shifts, torch.Tensor)
                    else type(shifts).__name__
                )
                raise ValueError(f"shifts must be an ({n}, 2) int64 tensor on {x.device}, got {got}")
            low, high = (int(v) for v in shifts.aminmax()) if n > 0 else (0, 0)
            if low < 0 or high > 2 * self.pad:
                raise ValueError(f"shifts must lie in [0, {2 * self.pad}] (2 * pad), got range [{low}, {high}]")
        if self.pad == 0:
            return x
        # Source pixel of output (y, x) is (y + dy - pad, x + dx - pad) in the unpadded image, clamped
        # to the border: the clamp is the replicate padding.
        base_y = torch.arange(h, device=x.device) - self.pad
        base_x = torch.arange(w, device=x.device) - self.pad
        rows = (shifts[:, 1:2] + base_y).clamp_(0, h - 1)  # (N, H)
        cols = (shifts[:, 0:1] + base_x).clamp_(0, w - 1)  # (N, W)
        flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        # One gather over the flattened image measured fastest on CPU (vs. pad + two gathers, unfold,
        # advanced indexing, grid_sample), and it is a single kernel on CUDA.
        return x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)


def make_augmentation(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered augmentation from its config name and constructor arguments.

    :param name: A name in :data:`AUGMENTATIONS`, e.g. ``"shift"``.
    :param kwargs: Constructor arguments of that class, e.g. ``pad=4``; checked against its signature.
    :return: The augmentation module.
    :raises ValueError: for an unknown name or key (naming ``aug`` and what is allowed), or a bad value
        (prefixed ``aug.<name>:``).
    """
    return AUGMENTATIONS.build(name, kwargs)
