"""Errors a person can act on. The CLI prints their message as one line and exits with code 2."""


class VQDrawError(Exception):
    """Base class: bad input, a missing or corrupt file, an unknown name."""


class ConfigError(VQDrawError, ValueError):
    """An invalid configuration value or an unknown preset."""


class InputError(VQDrawError, ValueError):
    """Input tensors or images that do not fit the model (shape, channels, range, stage count)."""


class CheckpointError(VQDrawError):
    """A model or run folder that is missing, incomplete or corrupt."""


class PathError(VQDrawError):
    """A file or folder that cannot be read or written as asked: a special file (a FIFO, a
    device), one of a model's own files as an output, an output that is also an input, a file
    over its size limit, or an operating-system error (permissions, a full disk) on a path."""


class TrainingDiverged(VQDrawError):
    """The training loss became NaN or infinite; the run stopped without saving that step."""


class InputWarning(UserWarning):
    """Inputs that will work but probably not as meant (e.g. images that look inverted against
    the model's training data). The library warns through :mod:`warnings`; the CLI prints each as
    one ``warning:`` line."""
