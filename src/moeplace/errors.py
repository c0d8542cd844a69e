"""Errors a user can cause. The CLI prints them as one line and exits with code 2; bugs stay tracebacks."""


class MoeplaceError(Exception):
    """Base class of every user-caused error (bad file, bad argument, impossible request)."""


class InputError(MoeplaceError, ValueError):
    """A file or argument the user gave is missing, malformed or inconsistent."""


class CheckpointError(MoeplaceError):
    """A checkpoint is corrupt or does not fit the model it is loaded into."""


class InfeasibleError(MoeplaceError):
    """The request cannot be satisfied (no legal slot left, a macro larger than the canvas, ...)."""
