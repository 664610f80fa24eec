"""fastdnn: the deep L-layer network of "Neural Networks and Deep Learning", fast on every device.

``import fastdnn`` imports NumPy only; numba and cupy are imported when a backend needs them.
"""
from .backends import available_backends, get_backend
from .errors import (BackendUnavailableError, DeviceFallbackWarning, DistributedError, FastDNNError,
                     ModelFileError, ShapeError, TrainingDivergedError)
from .gradcheck import gradient_check
from .history import History
from .network import Network, load

__version__ = "0.1.0"

__all__ = ["Network", "History", "load", "get_backend", "available_backends", "gradient_check",
           "FastDNNError", "ShapeError", "BackendUnavailableError", "DeviceFallbackWarning",
           "TrainingDivergedError", "ModelFileError", "DistributedError", "__version__"]
