"""Probe figures: RGB uint8 images of the promised size, drawn from their data, robust to dead spectra."""

import numpy as np
import pytest

from rlplastic.monitor.figures import (
    FIGURE_TAGS,
    FigureInputs,
    LayerActivity,
    activity_figure,
    draw_probe_figures,
    hessian_spectrum_figure,
    spectrum_figure,
)

SHAPE = (280, 480, 3)  # 6 × 3.5 in at 80 dpi


def test_figures_are_rgb_uint8_and_show_their_data():
    sv = np.array([4.0, 2.0, 1.0, 0.5, 0.1])
    low, high = spectrum_figure(sv, 2, 0.01, step=7), spectrum_figure(sv, 4, 0.01, step=7)
    assert low.dtype == np.uint8 and low.shape == SHAPE
    assert not np.array_equal(low, high)  # the srank marker moved
    assert np.array_equal(low, spectrum_figure(sv, 2, 0.01, step=7))  # deterministic
    layers = [LayerActivity("critic", "Q1.1", 0.6, 0.1), LayerActivity("actor", "policy.1", 0.3, 0.5)]
    assert activity_figure(layers, 0.025, step=1).shape == SHAPE


def test_dead_spectra_are_drawn_and_bad_ones_refused():
    zeros = np.zeros(6)
    assert spectrum_figure(zeros, 0, 0.01, step=0).shape == SHAPE
    assert hessian_spectrum_figure(zeros, 0, 0.01, step=0).shape == SHAPE
    with pytest.raises(ValueError, match="finite"):
        hessian_spectrum_figure(np.array([1.0, np.nan]), 1, 0.01, step=0)
    with pytest.raises(ValueError, match="at least one layer"):
        activity_figure([], 0.025, step=0)


def test_only_figures_with_data_are_drawn():
    assert draw_probe_figures(FigureInputs(step=3)) == {}
    images = draw_probe_figures(FigureInputs(step=3, hessian_eigenvalues=np.array([2.0, 1.0, 0.0]), hessian_srank=2))
    assert list(images) == [FIGURE_TAGS["hessian_spectrum"]]
