"""Area resize against the definition: the mean of the source area each output pixel covers."""

from __future__ import annotations

import numpy as np
import pytest

from actors.resize import AreaResize, area_weights


def area_mean(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area averaging, the obvious way: blow each pixel up into a height x width block (an image of
    H*height x W*width), then average blocks of H x W, which cover exactly one output pixel's area."""
    c, h, w = frame.shape
    big = frame.astype(np.float64).repeat(height, axis=1).repeat(width, axis=2)
    return big.reshape(c, height, h, width, w).mean(axis=(2, 4))


@pytest.mark.parametrize(
    ("src", "dst"), [((84, 84), (64, 64)), ((45, 66), (20, 33)), ((7, 5), (7, 5))]
)
def test_matches_the_area_mean(src: tuple[int, int], dst: tuple[int, int]) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (3, *src), dtype=np.uint8)
    out = AreaResize(src, dst)(frame)
    assert out.dtype == np.uint8 and out.shape == (3, *dst)
    exact = area_mean(frame, *dst)
    # float32 weights: the rounding differs from the exact mean only at a .5 tie, by one step.
    assert np.abs(out.astype(np.float64) - exact).max() <= 0.5 + 1e-3
    assert np.count_nonzero(out != np.rint(exact)) <= out.size // 1000


def test_whole_factor_is_the_block_mean() -> None:
    frame = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6) * 5
    out = AreaResize((4, 6), (2, 3))(frame)
    blocks = frame.astype(np.float64).reshape(2, 2, 2, 3, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(out, np.rint(blocks).astype(np.uint8))


def test_weights_partition_every_source_pixel() -> None:
    w = area_weights(84, 64)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)  # each output: a mean
    np.testing.assert_allclose(w.sum(axis=0), 64 / 84, rtol=1e-6)  # each source: counted once
    assert (w >= 0).all()


def test_only_shrinks() -> None:
    with pytest.raises(ValueError, match="only shrinks"):
        area_weights(64, 84)
