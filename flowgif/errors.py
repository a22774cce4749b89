"""The one exception family that flowgif raises for problems a user can fix."""

__all__ = ["FlowgifError", "Interrupted"]


class FlowgifError(Exception):
    """A problem with the user's input or environment, worded as one line that says what to do.

    The CLI catches it once, prints the message and exits with status 1.
    """


class Interrupted(KeyboardInterrupt):
    """Training stopped on request (a signal, Ctrl-C) at a step boundary, or cut mid-step.

    Attributes:
        step: the last step completed.
        saved: whether the checkpoint now holds exactly that step (False: the state was cut
            mid-step, or nothing had been trained; an earlier checkpoint, if any, is kept).
        checkpoint_step: the step the run's checkpoint holds, or None when there is none.
    """

    def __init__(self, step: int, saved: bool, checkpoint_step: int | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.saved = saved
        self.checkpoint_step = checkpoint_step
