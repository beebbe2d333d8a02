"""The noise table reads each mechanism's own calibration (no noise drawn)."""

from __future__ import annotations

import math

import pytest

from dpglow.flow import Glow
from dpglow.privacy import Mechanism
from dpglow.privacy.noise_table import noise_scale_rows, scale_cell


def test_noise_table_matches_the_calibration_formulas(monkeypatch):
    def no_sampling(self, *args, **kwargs):
        raise AssertionError("the noise table must not run a mechanism")

    monkeypatch.setattr(Mechanism, "__call__", no_sampling)
    flow = Glow(image_size=64, num_levels=4, depth=1, hidden_channels=4)
    rows = noise_scale_rows(
        latent_shapes=flow.latent_shapes, image_size=flow.image_size, epsilons=[1, 10]
    )
    rows = {(r["mechanism"], r["levels"]): r for r in rows}
    d, d_coarse = 4096, 512
    assert list(rows[("laplace_l1", "all")]) == ["mechanism", "levels", "d", "eps=1", "eps=10"]
    assert [r["d"] for r in rows.values()] == [d, d, d, d_coarse, d_coarse, d_coarse, d, 16]
    # laplace_elementwise, per-image accounting: b = 2c / (eps / d) with c = 3
    assert rows[("laplace_elementwise", "all")]["eps=1"] == pytest.approx(2 * 3 * d)
    # laplace_l1 with R = d sqrt(2/pi): b = 2R / eps
    r = d_coarse * math.sqrt(2 / math.pi)
    assert rows[("laplace_l1", "coarsest")]["eps=10"] == pytest.approx(2 * r / 10, rel=1e-6)
    assert rows[("pixel_laplace", "pixels")]["eps=1"] == pytest.approx(d)
    assert rows[("dp_pix (cell 16)", "pixels")]["eps=1"] == pytest.approx(16)
    # Less noise for fewer privatized elements, for every latent mechanism.
    for name in ("laplace_elementwise", "laplace_l1", "gaussian_l2"):
        assert rows[(name, "coarsest")]["eps=1"] < rows[(name, "all")]["eps=1"]


def test_scale_cell_keeps_three_significant_digits():
    assert scale_cell(24576.0) == "24600"
    assert scale_cell(6.536270322097073) == "6.54"
    assert scale_cell(4.0939e-05) == "4.09e-05"
    assert scale_cell(1.2345e7) == "1.23e+07"
    assert scale_cell(0.0) == "0" and scale_cell(math.inf) == "inf"
    assert (scale_cell(4096), scale_cell("laplace_l1")) == ("4096", "laplace_l1")
