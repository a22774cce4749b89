"""The picture density: normalisation, entropy, sampling, frames, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flowgif.errors import FlowgifError
from flowgif.sources.picture import ImageDensity, ink_map, load_image
from tests.conftest import ink_image


def random_density(seed: int = 0, shape: tuple[int, int] = (12, 20)) -> ImageDensity:
    rng = np.random.default_rng(seed)
    ink = rng.random(shape) * (rng.random(shape) > 0.4)
    return ImageDensity(ink, size=(shape[1] * 3, shape[0] * 3), extent=2.0)


def test_density_integrates_to_one_on_a_fine_grid() -> None:
    d = random_density()
    n = 801
    xs = torch.linspace(-2.5, 2.5, n)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    p = d.log_prob(grid).exp()
    assert float(p.sum() * (5.0 / (n - 1)) ** 2) == pytest.approx(1.0, abs=0.01)


def test_entropy_matches_mean_negative_log_prob_of_samples() -> None:
    d = random_density(1)
    x = d.sample(200_000, torch.Generator().manual_seed(0))
    assert float(-d.log_prob(x).mean()) == pytest.approx(d.entropy(), abs=0.01)


def test_uniform_square_entropy_is_log_area() -> None:
    d = ImageDensity(np.ones((8, 8)), size=(8, 8), extent=2.0)
    assert d.entropy() == pytest.approx(np.log(16.0))


def test_samples_land_on_ink_only_and_in_the_frame() -> None:
    d = random_density(2)
    x = d.sample(50_000)
    assert torch.isfinite(d.log_prob(x)).all()
    assert float(x[:, 0].abs().max()) <= d.half[0] and float(x[:, 1].abs().max()) <= d.half[1]


def test_picture_is_upright_and_centred() -> None:
    ink = np.zeros((10, 20))
    ink[0, :] = 1.0  # ink only in the top row
    d = ImageDensity(ink, size=(20, 10), extent=2.0)
    x = d.sample(1000)
    assert (x[:, 1] >= 0.8 - 1e-6).all()  # row 0 is the top tenth: +y in model coordinates
    assert d.half == pytest.approx((2.0, 1.0))  # longer side spans [-extent, extent]
    uv = d.to_pixels(x)
    assert (uv[:, 1] < 1.0).all()  # ... and row 0 in pixel coordinates


def test_pixel_model_maps_round_trip() -> None:
    d = random_density(3)
    uv = np.random.default_rng(0).random((100, 2)) * [60, 36]
    assert np.allclose(d.to_pixels(d.from_pixels(uv)), uv, atol=1e-4)


def test_ink_is_darkness_times_opacity_and_invert() -> None:
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))  # transparent black carries no ink
    assert ink_map(rgba).tolist() == [[1.0, 0.0]]
    grey = Image.new("L", (1, 1), 255)
    assert ink_map(grey, invert=True)[0, 0] == 1.0


def test_sixteen_bit_picture_uses_its_full_range() -> None:
    a = np.array([[0, 65535]], dtype=np.uint16)
    img = Image.fromarray(a)
    assert img.mode.startswith("I")
    assert ink_map(img).tolist() == [[1.0, 0.0]]


def test_large_picture_is_area_averaged_to_working_resolution() -> None:
    ink = np.zeros((300, 600))
    ink[:, :300] = 1.0
    d = ImageDensity.from_image(ink_image(ink), resolution=64)
    assert d.grid == (32, 64)
    assert d.probs_np[:, :32].sum() == pytest.approx(1.0)


def test_blank_picture_is_refused() -> None:
    with pytest.raises(FlowgifError, match="no ink"):
        ImageDensity.from_image(Image.new("L", (10, 10), 255))


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(FlowgifError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(FlowgifError, match="not an image"):
        load_image(tmp_path / "text.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(FlowgifError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(FlowgifError, match="folder"):
        load_image(tmp_path)
