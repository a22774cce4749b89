"""How the animation reads: pacing by shape, a camera that shows the gathering, GIF frames that
decode exactly, transparency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowgif.draw import KEEP, Canvas, Palette, make_palette
from flowgif.render.pacing import formed, jumpiness, paced_times, shape_progress
from flowgif.render.writers import write_gif, write_webp
from tests.test_cli import assert_one_line_error, call


def straight_paths(
    seed: int = 0, n: int = 3000, steps: int = 129
) -> tuple[np.ndarray, np.ndarray]:
    """Flow-matching paths x_t = (1 - t) z + t x1 from N(0, I) to two tight blobs and a ring."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    k = rng.integers(0, 3, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    x1 = np.where(
        (k == 2)[:, None],
        np.stack([np.cos(angle), np.sin(angle)], 1) * 1.5,
        np.array([[-1.0, 0.5], [1.0, -0.5]])[np.minimum(k, 1)]
        + 0.05 * rng.standard_normal((n, 2)),
    )
    grid = np.linspace(0.0, 1.0, steps)
    return grid, (1 - grid)[:, None, None] * z + grid[:, None, None] * x1


def test_shape_progress_runs_from_zero_to_one_and_never_back() -> None:
    _, paths = straight_paths()
    p = shape_progress(paths)
    assert p[0] == 0.0 and p[-1] == 1.0 and np.all(np.diff(p) >= 0)
    assert p[len(p) // 2] < 0.5  # at t = 0.5 the blobs are still far from formed


def test_shape_pacing_forms_the_picture_mid_animation_smoothly() -> None:
    grid, paths = straight_paths()
    progress = shape_progress(paths)
    late = formed(np.interp(paced_times(grid, paths, 120, "time", True)[0], grid, progress))
    times, _ = paced_times(grid, paths, 120, "shape", True)
    mid = formed(np.interp(times, grid, progress))
    assert late > 0.85  # equal times: the tight blobs form in the last frames
    assert mid <= 0.7 and mid <= late - 0.2  # far earlier, as smoothness allows
    assert jumpiness(paths, grid, times) <= 3.0
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.0) and np.all(np.diff(times) > 0)


def test_camera_holds_while_the_cloud_gathers(tiny_run: Path) -> None:
    from flowgif.render.camera import camera
    from flowgif.store import load_run

    run = load_run(tiny_run)
    grid, paths = straight_paths()
    progress = np.clip(np.linspace(-0.2, 1.2, len(grid)), 0, 1)
    canvas = Canvas.around(run.density.size, 256)
    views = camera(canvas, run.density, paths, True, progress)
    scales = np.array([v.scale for v in views])
    first = progress < 0.4
    assert np.allclose(scales[first], scales[0])  # held: the contraction shows on screen
    assert scales[-1] > 1.3 * scales[0]  # and then it glides in to the picture's frame
    assert np.all(np.diff(scales) >= -1e-9)


def moving_frames(count: int = 12, size: tuple[int, int] = (48, 40)) -> tuple[list, Palette]:
    palette = make_palette(np.array([[200, 30, 30], [30, 30, 200]]), (255, 255, 255))
    rng = np.random.default_rng(1)
    dots = rng.uniform(0, 1, (60, 2)) * (size[0] - 1, size[1] - 1)
    frames = []
    for k in range(count):
        f = np.zeros(size[::-1], dtype=np.uint8)
        if k != 5:  # frame 5 repeats frame 4: nothing changes
            dots = dots + rng.normal(0, 1.5, dots.shape) * (k < 8)  # the last ones hold still
        xy = np.clip(dots, 0, np.array(size) - 1).astype(int)
        f[xy[:, 1], xy[:, 0]] = 1 + rng.integers(0, 2 * palette.levels, len(xy))
        frames.append(f)
    assert not any((f == KEEP).any() for f in frames)
    return frames, palette


def test_gif_frames_decode_exactly_as_drawn(tmp_path: Path) -> None:
    frames, palette = moving_frames()
    ms = [540] + [40] * (len(frames) - 2) + [1040]
    write_gif(tmp_path / "a.gif", iter(frames), palette, ms)
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == len(frames)
    for k, frame in enumerate(frames):
        gif.seek(k)
        assert np.array_equal(np.asarray(gif.convert("RGB")), palette.rgb[frame]), k
        assert gif.info["duration"] == ms[k]
    assert gif.info.get("loop") == 0


def test_transparent_gif_and_webp_show_the_page_through(tmp_path: Path) -> None:
    frames, palette = moving_frames()
    write_gif(tmp_path / "t.gif", iter(frames), palette, [40] * len(frames), transparent=True)
    write_webp(tmp_path / "t.webp", iter(frames), palette, [40] * len(frames), transparent=True)
    for name in ("t.gif", "t.webp"):
        anim = Image.open(tmp_path / name)
        for k in (0, 3, len(frames) - 1):
            anim.seek(k)
            rgba = np.asarray(anim.convert("RGBA"))
            assert np.array_equal(rgba[..., 3] > 0, frames[k] != 0), (name, k)
            if name == "t.gif":  # WebP's colours are lossy; its alpha is not
                on = frames[k] != 0
                assert np.array_equal(rgba[..., :3][on], palette.rgb[frames[k]][on]), k


def test_render_transparent_and_paces(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.gif"
    result = call("render", tiny_run, "--out", out, "--frames", 6, "--particles", 300,
                  "--size", 64, "--background", "transparent")  # fmt: skip
    assert result.exit_code == 0, result.output
    first = Image.open(out).convert("RGBA")
    assert np.asarray(first)[0, 0, 3] == 0  # the corner is see-through
    refused = call("render", tiny_run, "--out", tmp_path / "t.mp4", "--background", "transparent")
    assert_one_line_error(refused, "transparency")
    for pace in ("shape", "time"):
        result = call("render", tiny_run, "--out", tmp_path / f"{pace}.gif", "--frames", 6,
                      "--particles", 300, "--size", 64, "--pace", pace)  # fmt: skip
        assert result.exit_code == 0, result.output
    assert (tmp_path / "shape.gif").read_bytes() != (tmp_path / "time.gif").read_bytes()


def test_panels_layout_and_refusals(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "panels"
    result = call("render", tiny_run, "--out", out, "--panels", "--frames", 3,
                  "--particles", 400, "--size", 64)  # fmt: skip
    assert result.exit_code == 0, result.output
    frames = [np.asarray(Image.open(p)) for p in sorted(out.glob("frame_*.png"))]
    single = Image.open(next(iter(sorted(out.glob("frame_*.png")))))
    h, w = frames[0].shape
    canvas = Canvas.around((40, 24), 64)  # the tiny picture, one panel
    gap = max(4, canvas.width // 64)
    assert w == 4 * canvas.width + 3 * gap and h > canvas.height  # four panels under labels
    top = h - canvas.height
    picture = [f[top:, : canvas.width] for f in frames]
    assert all(np.array_equal(picture[0], p) for p in picture)  # the picture panel holds still
    assert (picture[0] != 0).mean() > 0.2  # and shows the L's ink
    field = [f[top:, 3 * (canvas.width + gap) :] for f in frames]
    assert all((f != 0).any() for f in field)  # arrows drawn in every frame
    assert single.mode == "P"
    from tests.test_cli import SMOKE

    nvp = tmp_path / "nvp"
    trained = call("train", "--target", "moons", "--method", "planar", "--config", SMOKE,
                   "--steps", 3, "--out", nvp)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert_one_line_error(
        call("render", nvp, "--panels", "--out", tmp_path / "x.gif"), "continuous"
    )
    both = call("render", tiny_run, tiny_run, "--panels", "--out", tmp_path / "y.gif")
    assert_one_line_error(both, "--panels shows one continuous two-dimensional flow")


def test_panels_density_is_the_flows_own(tiny_run: Path) -> None:
    """The log-density carried along the paths equals the flow's log_prob at the end points."""
    import torch

    from flowgif.store import load_run

    run = load_run(tiny_run)
    z = run.flow.starts(300, torch.Generator().manual_seed(3))
    paths, logp = run.flow.paths_with_log_prob(z, torch.tensor([0.0, 0.5, 1.0]))
    assert paths.shape == (3, 300, 2) and logp.shape == (3, 300)
    exact = run.flow.log_prob(paths[-1], tol=1e-6)
    # within the carried solve's error (smoke.toml: rk4 in 9 steps): on three sets of 300
    # points the largest was 0.024-0.053 nats, the median 0.003-0.007
    err = (logp[-1] - exact).abs()
    assert float(err.max()) < 0.1 and float(err.median()) < 0.02
