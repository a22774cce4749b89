"""Upper limits on sizes a user can ask for: past them a run cannot work on any machine flowgif
targets (memory, time), so they are refused at once with the limit named."""

__all__ = [
    "MAX_FRAMES",
    "MAX_HOLD",
    "MAX_PARTICLES",
    "MAX_PATH_POINTS",
    "MAX_SAMPLES",
    "MAX_SEED",
]

MAX_FRAMES = 10_000  # frames of one animation
MAX_PARTICLES = 5_000_000  # particles of one animation
MAX_PATH_POINTS = 250_000_000  # frames x particles held in memory (2 GB of float32 pairs)
MAX_HOLD = 60.0  # seconds a render holds its first or last frame
MAX_SAMPLES = 50_000_000  # samples drawn at once (400 MB of float32 pairs; the solve holds more)
MAX_SEED = 2**63 - 1  # torch's generators take seeds up to here
