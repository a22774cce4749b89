"""Upper limits on sizes a user can ask for: past them a run cannot work on any machine flowgif
targets (memory, time), so they are refused at once with the limit named."""

__all__ = [
    "MAX_FRAMES",
    "MAX_HOLD",
    "MAX_NLL",
    "MAX_PARTICLES",
    "MAX_PATH_POINTS",
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_TRANSPORT",
]

MAX_FRAMES = 10_000  # frames of one animation
MAX_PARTICLES = 5_000_000  # particles of one animation
MAX_PATH_POINTS = 250_000_000  # frames x particles held in memory (2 GB of float32 pairs)
MAX_HOLD = 60.0  # seconds a render holds its first or last frame
# Samples one command draws: a trained run's adaptive solve drew 200,000 in 22 s on this 2-core
# machine (bench/THREADS.md), so 2,000,000 take a few minutes; 50,000,000 ran 10 minutes and
# took 7.3 GB without finishing.
MAX_SAMPLES = 2_000_000
MAX_TRANSPORT = 5_000  # eval's exact assignment: cubic in time, n^2 in memory (5,000: 200 MB)
MAX_NLL = 1_000_000  # eval's likelihood solves (20,000 take seconds; each point a solve)
MAX_SEED = 2**63 - 1  # torch's generators take seeds up to here
