"""The one exception family that flowgif raises for problems a user can fix."""

__all__ = ["FlowgifError"]


class FlowgifError(Exception):
    """A problem with the user's input or environment, worded as one line that says what to do.

    The CLI catches it once, prints the message and exits with status 1.
    """
