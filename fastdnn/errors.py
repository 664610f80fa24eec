"""Errors and warnings raised by fastdnn (standard library only)."""


class FastDNNError(Exception):
    """Base class of every error fastdnn raises on purpose."""


class ShapeError(FastDNNError, ValueError):
    """An array has the wrong shape; the message names the layer, the array and both shapes."""


class BackendUnavailableError(FastDNNError, RuntimeError):
    """A backend or device was asked for by name and cannot be used here; the message says why."""


class TrainingDivergedError(FastDNNError, FloatingPointError):
    """The cost became NaN or infinite; the network keeps the last parameters with a finite cost."""

    def __init__(self, iteration, cost, restored_iteration=None):
        self.iteration = iteration
        self.cost = cost
        self.restored_iteration = restored_iteration
        kept = ("the initial parameters" if restored_iteration is None
                else f"the parameters of iteration {restored_iteration}")
        super().__init__(f"cost became {cost} at iteration {iteration}; the network keeps {kept} "
                         "(last finite cost). Try a smaller learning rate or check the input scale.")


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
