"""Errors and warnings raised by fastdnn (standard library only)."""


class FastDNNError(Exception):
    """Base class of every error fastdnn raises on purpose."""


class ShapeError(FastDNNError, ValueError):
    """An array has the wrong shape; the message names the layer, the array and both shapes."""


class BackendUnavailableError(FastDNNError, RuntimeError):
    """A backend or device was asked for by name and cannot be used here; the message says why."""


class TrainingDivergedError(FastDNNError, FloatingPointError):
    """The cost became NaN or infinite (or a call's last step made the parameters so). ``iteration``
    is the network's iteration count at that step (over all calls, as ``net.iteration``), ``epoch``
    its epoch count. The network goes back to the step before, with its optimizer state and counters
    (``restored_iteration``), when that step was taken in the same call; otherwise (``None``: the
    call's first step) it is left exactly as it was before the call. ``history``: the records of the
    call so far (set by ``fit``)."""

    def __init__(self, iteration, cost, restored_iteration=None, epoch=None):
        self.iteration, self.cost, self.epoch = iteration, cost, epoch
        self.restored_iteration = restored_iteration
        self.history = None
        kept = ("is unchanged (the step was the first of this call)" if restored_iteration is None
                else f"keeps the parameters of iteration {restored_iteration}, the last with a finite cost")
        where = f"iteration {iteration}" + (f" (epoch {epoch})" if epoch else "")
        super().__init__(f"cost became {cost} at {where}; the network {kept}. "
                         "Try a smaller learning rate or check the input scale.")


class DistributedError(FastDNNError, RuntimeError):
    """A data-parallel job cannot go on: another rank failed (the message names it and its error),
    or the ranks' networks or data do not fit together."""


class ModelFileError(FastDNNError, ValueError):
    """A model file is truncated, corrupted, from another program or of an unknown format version."""


class DeviceFallbackWarning(UserWarning):
    """A device was asked for but cannot be used; fastdnn runs on another one (the message says which)."""


def unknown_name(kind, name, choices):
    """ValueError for an unknown name that lists the choices."""
    listed = ", ".join(repr(c) for c in sorted(choices))
    return ValueError(f"unknown {kind} {name!r}; expected one of {listed}")
