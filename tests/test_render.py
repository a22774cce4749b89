"""Rendering: formats, frame counts, sizes, loops, determinism, colours."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageSequence

from flowgif.errors import FlowgifError
from flowgif.render import RenderOptions, render
from flowgif.store import load_run

FAST = {"particles": 2000, "size": 96}


def test_gif_has_asked_frames_size_aspect_and_loops(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.gif"
    report = render(load_run(tiny_run), out, RenderOptions(frames=12, **FAST))
    img = Image.open(out)
    assert img.n_frames == 12 and report.frames == 12
    assert img.info["loop"] == 0
    w, h = img.size
    assert max(w, h) == 96 and w % 2 == 0 and h % 2 == 0
    assert w / h == pytest.approx(40 / 24, rel=0.1)  # the picture's aspect is kept
    durations = [f.info["duration"] for f in ImageSequence.Iterator(img)]
    assert durations[1] == 40 and durations[-1] > durations[1]  # 25 fps, hold at the end


def test_pingpong_plays_the_same_frames_back(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.gif"
    render(load_run(tiny_run), out, RenderOptions(frames=8, loop="pingpong", hold=0, **FAST))
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(out))]
    assert len(frames) == 8 + 6
    for k in range(1, 7):
        assert np.array_equal(frames[8 - 1 - k], frames[8 - 1 + k])


def test_same_seed_same_bytes_other_seed_differs(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    paths = [tmp_path / f"{k}.gif" for k in range(3)]
    for path, seed in zip(paths, (0, 0, 1), strict=True):
        render(run, path, RenderOptions(frames=5, seed=seed, **FAST))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_last_frame_shows_the_picture_upright(tiny_png: Path, tmp_path: Path) -> None:
    from flowgif.config import load_config
    from flowgif.fit import train_run
    from tests.conftest import ROOT

    run = tmp_path / "run"
    smoke = load_config(ROOT / "configs" / "smoke.toml")
    train_run(tiny_png, smoke.updated({"train.steps": 150}), run, preview=False)
    out = tmp_path / "frames"
    render(
        load_run(run),
        out,
        RenderOptions(frames=3, color="mono", particles=4000, size=80, hold=0),
    )
    last = np.asarray(Image.open(out / "frame_0002.png").convert("L"), dtype=float)
    ink = 255 - last
    h, w = ink.shape
    # The L's bar is on the left and its foot at the bottom: more ink there than opposite.
    assert ink[:, : w // 2].sum() > 1.5 * ink[:, w // 2 :].sum()
    assert ink[h // 2 :, :].sum() > 1.2 * ink[: h // 2, :].sum()


def test_mp4_and_webp_decode_back(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    render(run, tmp_path / "a.mp4", RenderOptions(frames=6, hold=0, **FAST))
    frames = iio.imread(tmp_path / "a.mp4", plugin="FFMPEG")
    assert frames.shape[0] == 6 and frames.shape[-1] == 3
    render(run, tmp_path / "a.webp", RenderOptions(frames=6, hold=0, **FAST))
    webp = Image.open(tmp_path / "a.webp")
    assert webp.format == "WEBP" and webp.n_frames == 6
    webp.seek(5)
    assert np.asarray(webp.convert("RGB")).shape[2] == 3


def test_image_colours_come_from_the_picture(tmp_path: Path) -> None:
    from flowgif.config import load_config
    from flowgif.fit import train_run
    from tests.conftest import ROOT

    img = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    img.paste((230, 20, 20, 255), (0, 0, 16, 16))  # red half
    img.paste((20, 20, 230, 255), (16, 0, 32, 16))  # blue half
    path = tmp_path / "rb.png"
    img.save(path)
    run_dir = tmp_path / "rb"
    train_run(
        path, load_config(ROOT / "configs" / "smoke.toml").updated({"train.steps": 150}), run_dir
    )
    out = tmp_path / "rb_frames"
    render(
        load_run(run_dir),
        out,
        RenderOptions(frames=2, color="image", particles=3000, size=64, hold=0, dot=1),
    )
    rgb = np.asarray(Image.open(out / "frame_0001.png").convert("RGB"), dtype=int)
    w = rgb.shape[1]
    left, right = rgb[:, : w // 2].reshape(-1, 3), rgb[:, w // 2 :].reshape(-1, 3)
    red = lambda a: (a[:, 0] > a[:, 2] + 60).sum()  # noqa: E731
    blue = lambda a: (a[:, 2] > a[:, 0] + 60).sum()  # noqa: E731
    assert red(left) > 3 * blue(left) and blue(right) > 3 * red(right)


def test_bad_suffix_and_options_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    with pytest.raises(FlowgifError, match="gif"):
        render(run, tmp_path / "a.avi", RenderOptions(frames=2, **FAST))
    with pytest.raises(FlowgifError, match="particles"):
        render(run, tmp_path / "a.gif", RenderOptions(frames=2, particles=0))


@pytest.mark.parametrize("kind", ["density", "field", "paths", "loss"])
def test_each_plot_kind_writes_a_png(tiny_run: Path, tmp_path: Path, kind: str) -> None:
    from flowgif.plot import plot

    out = tmp_path / f"{kind}.png"
    plot(load_run(tiny_run), kind, out, grid=16, particles=50)
    img = Image.open(out)
    assert img.format == "PNG" and min(img.size) > 100
    assert np.asarray(img.convert("L")).std() > 5  # something was drawn


@pytest.mark.parametrize("effect", [{"trail": 4}, {"glow": 1.0}])
def test_trails_and_glow_add_fainter_pixels(tiny_run: Path, tmp_path: Path, effect) -> None:
    run = load_run(tiny_run)
    drawn = []
    for extra in ({}, effect):
        out = tmp_path / f"t{len(drawn)}"
        render(run, out, RenderOptions(frames=10, hold=0, zoom=False, **FAST, **extra))
        mid = np.asarray(Image.open(out / "frame_0005.png").convert("L"))
        drawn.append((mid < 250).sum())
    assert drawn[1] > 1.3 * drawn[0]


def test_runs_side_by_side_share_noise_and_show_their_labels(
    tiny_run: Path, tmp_path: Path
) -> None:
    from tests.test_cli import call

    run = load_run(tiny_run)
    single, double = tmp_path / "one.gif", tmp_path / "two.gif"
    render(run, single, RenderOptions(frames=4, hold=0, **FAST))
    render([run, run], double, RenderOptions(frames=4, hold=0, **FAST), labels=["a", "b"])
    w1, h1 = Image.open(single).size
    img = Image.open(double)
    w2, h2 = img.size
    assert img.n_frames == 4 and w2 > 2 * w1 and h2 > h1  # two panels under a caption strip
    last = np.asarray(ImageSequence.all_frames(img)[-1].convert("L"))
    left, right = last[h2 - h1 :, :w1], last[h2 - h1 :, w2 - w1 :]
    assert np.array_equal(left, right)  # the same run from the same noise: the same panel
    assert (last[: h2 - h1] < 128).any()  # the captions are drawn
    bad = call("render", tiny_run, tiny_run, "--label", "only one", "--out", tmp_path / "x.gif")
    assert bad.exit_code == 1 and "--label given 1 times for 2 runs" in bad.output


def test_outputs_get_the_usual_permissions(tiny_run: Path, tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        render(load_run(tiny_run), tmp_path / "p.gif", RenderOptions(frames=2, **FAST))
        render(load_run(tiny_run), tmp_path / "frames", RenderOptions(frames=2, **FAST))
    finally:
        os.umask(mask)
    assert (tmp_path / "p.gif").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o755


def test_gif_warns_only_when_its_10_ms_delays_change_the_speed(
    tiny_run: Path, tmp_path: Path
) -> None:
    import warnings

    run = load_run(tiny_run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render(run, tmp_path / "a.gif", RenderOptions(frames=2, fps=25, **FAST))  # held frames
    with pytest.warns(UserWarning, match="30 fps plays as 33.3 fps"):
        render(run, tmp_path / "b.gif", RenderOptions(frames=3, fps=30, **FAST))
