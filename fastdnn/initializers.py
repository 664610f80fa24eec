"""Initial parameters W[l] (n_l, n_{l-1}) and b[l] = 0 (n_l, 1), seeded and backend-independent.

Every scheme draws W[l] = randn(n_l, n_{l-1}) * scale in float64 on the host, layer by layer,
from ``numpy.random.RandomState(seed)`` — the same stream as the course's
``np.random.seed(seed); np.random.randn(...)`` — so a seed gives the same parameters on
every backend and dtype (cast afterwards).

"zeros" is allowed so the symmetry problem can be shown: every unit of a layer then computes
the same function and receives the same gradient, so they never become different.
"""
import numpy as np

from .errors import unknown_name

# W[l] from the draw R = randn(n_l, n_{l-1}), each written as the course writes it (a division stays a division:
# R * (1 / s) can differ from R / s in the last bit)
SCALES = {
    "he": lambda R, n_prev, n: R * np.sqrt(2.0 / n_prev),          # He et al. 2015, for relu
    "xavier": lambda R, n_prev, n: R * np.sqrt(2.0 / (n_prev + n)),  # Glorot & Bengio 2010, normal
    "scaled": lambda R, n_prev, n: R / np.sqrt(n_prev),            # the course's / sqrt(n[l-1])
    "small": lambda R, n_prev, n: R * 0.01,                        # the course's * 0.01
    "large": lambda R, n_prev, n: R * 10,                          # the course's "large random" demo
    "zeros": lambda R, n_prev, n: np.zeros_like(R),
}


def initialize(layer_dims, scheme="he", seed=None):
    """{'W1': (n1, n0), 'b1': (n1, 1), ...} in float64 for layer_dims [n0, n1, ..., nL]."""
    if scheme not in SCALES:
        raise unknown_name("init", scheme, SCALES)
    rng = np.random.RandomState(seed)
    parameters = {}
    for l in range(1, len(layer_dims)):
        n_prev, n = layer_dims[l - 1], layer_dims[l]
        parameters[f"W{l}"] = SCALES[scheme](rng.randn(n, n_prev), n_prev, n)
        parameters[f"b{l}"] = np.zeros((n, 1))
    return parameters
