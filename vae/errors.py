"""The one error type a stage reports as a single line.

Each subclass's message names the problem and the fix, so the stage prints it
alone: a traceback would bury it under frames of our code.
"""


class StageError(Exception):
    """A failure the user can fix; the message says how."""
