"""Gradient checking, as in the course: ||g - g_approx|| / (||g|| + ||g_approx||)."""
import numpy as np


def gradient_check(net, X, Y, epsilon=1e-7, max_checks=None, seed=0):
    """Relative difference between the network's backprop gradients and central differences
    (J(θ+ε) - J(θ-ε)) / 2ε of its cost. The differences run on a float64 copy of the network on the
    same backend, so a float32 network is checked against float64 finite differences. The cost
    includes the L2 term; dropout is off (it is random), as in the course.
    max_checks: check that many randomly chosen parameters (seeded) instead of all of them."""
    from .network import Network
    grads = net.gradients(X, Y)
    g = np.concatenate([grads[f"d{p}{l}"].ravel() for l in range(1, net.L + 1) for p in "Wb"])
    ref = Network.from_parameters(net.parameters, net.activations[:-1], net.activations[-1], net.loss,
                                  device=net.backend, dtype=np.float64).regularize(l2=net.l2)
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
            plus = ref.engine.cost(Xd, Yd)
            theta[i] = original - epsilon
            minus = ref.engine.cost(Xd, Yd)
            theta[i] = original
            approx[k] = (plus - minus) / (2 * epsilon)
    g = g[index].astype(np.float64)
    denominator = np.linalg.norm(g) + np.linalg.norm(approx)
    return float(np.linalg.norm(g - approx) / denominator) if denominator else 0.0

