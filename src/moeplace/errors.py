"""Errors a user can cause. The CLI prints them as one line and exits with their `exit_code`
(2: bad input, 3: training diverged); bugs stay tracebacks (exit code 1)."""


class MoeplaceError(Exception):
    """Base class of every user-caused error (bad file, bad argument, impossible request)."""

    exit_code = 2


class InputError(MoeplaceError, ValueError):
    """A file or argument the user gave is missing, malformed or inconsistent."""


class CheckpointError(MoeplaceError):
    """A checkpoint is corrupt or does not fit the model it is loaded into."""


class InfeasibleError(MoeplaceError):
    """The request cannot be satisfied (no legal slot left, a macro larger than the canvas, ...)."""


class NonFiniteError(ValueError):
    """A tensor holds NaN or infinity where finite numbers are needed (raised by layers and
    distributions; a training loop turns it into a DivergenceError naming its step)."""


class DivergenceError(MoeplaceError, ArithmeticError):
    """Training produced a non-finite loss, gradient or output: stopped, last good checkpoint kept."""

    exit_code = 3
