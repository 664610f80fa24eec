"""Gradient checking, as in the course: ||g - g_approx|| / (||g|| + ||g_approx||)."""
import math

import numpy as np

from ._checks import number


def gradient_check(net, X, Y, epsilon=1e-7, max_checks=None, seed=0):
    """Relative difference between the network's backprop gradients and central differences
    (J(θ+ε) - J(θ-ε)) / 2ε of its cost. The differences run on a float64 copy of the network on the
    same backend, so a float32 network is checked against float64 finite differences. The cost
    includes the L2 term; dropout is off (it is random), as in the course; batch normalization uses
    X's own μ and σ² (training mode).
    max_checks: check that many randomly chosen parameters (seeded) instead of all of them."""
    if not (math.isfinite(number("epsilon", epsilon)) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0; got {epsilon!r}")
    if max_checks is not None and (not isinstance(max_checks, (int, np.integer)) or isinstance(max_checks, bool)
                                   or max_checks < 1):
        raise ValueError(f"max_checks must be an integer >= 1 (or None: every parameter); got {max_checks!r}")
    grads = net.gradients(X, Y)
    g = np.concatenate([grads["d" + name].ravel() for name in net.engine.parameter_names()])
    ref = _float64_copy(net)
    Xd, Yd = ref.prepare(X, Y)
    theta = ref.engine.theta
    index = np.arange(g.size)
    if max_checks is not None and max_checks < g.size:
        index = np.sort(np.random.RandomState(seed).choice(g.size, max_checks, replace=False))
    approx = np.empty(index.size)
    with ref.backend.device_scope():
        for k, i in enumerate(index):
            original = float(theta[i])
            theta[i] = original + epsilon
            plus = ref.engine.cost(Xd, Yd, batch_stats=True)
            theta[i] = original - epsilon
            minus = ref.engine.cost(Xd, Yd, batch_stats=True)
            theta[i] = original
            approx[k] = (plus - minus) / (2 * epsilon)
    g = g[index].astype(np.float64)
    denominator = np.linalg.norm(g) + np.linalg.norm(approx)
    return float(np.linalg.norm(g - approx) / denominator) if denominator else 0.0



def _float64_copy(net):
    """The same network (architecture, skips, parameters, L2) in float64 on the same backend."""
    from .network import Network
    state = {k: v if k == "config" else np.asarray(v, np.float64) for k, v in net.state_dict().items()}
    state["config"] = dict(state["config"], dtype="float64")
    return Network.from_state_dict(state, device=net.backend)
