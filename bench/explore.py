"""Quick exploration: train with config overrides for a wall-time budget, score with the referee.

    python bench/explore.py '{"train.minutes": 3.0, "field.fourier_features": 64}' [IMAGE]

Prints one JSON line: the overrides, seconds, steps, sampling NFE and the referee's figures on
100,000 samples (no KL: that is bench/fidelity.py's job). Results of a sitting: bench/EXPLORE.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from flowgif.config import Config
from flowgif.fit import train
from flowgif.flows.model import ContinuousFlow
from flowgif.flows.model import sample as flow_sample
from flowgif.flows.ode import SolveStats
from flowgif.sources.picture import ImageDensity, load_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "referee"))
import score as referee  # noqa: E402  (the independent referee, beside the project)


def main() -> None:
    overrides = json.loads(sys.argv[1])
    image = (
        sys.argv[2]
        if len(sys.argv) > 2
        else str(ROOT.parent / "shared" / "bench-imgs" / "github.png")
    )
    density = ImageDensity.from_image(load_image(Path(image)))
    config = Config().updated(overrides)
    clock = time.time()
    result = train(config, density, torch.device("cpu"))
    seconds = time.time() - clock
    stats = SolveStats()
    solve = config.solve.__class__(method="dopri5", atol=1e-4, rtol=1e-4)
    x = flow_sample(ContinuousFlow(result.model, solve), 100_000, 1, stats=stats)
    figures = referee.score(image, density.to_pixels(x))
    print(
        json.dumps(
            {
                "overrides": overrides,
                "seconds": round(seconds, 1),
                "steps": result.steps,
                "nfe": stats.nfe,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
