"""The explicit for-loop twins of a training step, for benchmarks and teaching.

* ``per_example_step``: the course's ``for i in range(m)``: one example at a time, with vectors
  (z = W · a + b per example), gradients summed over the loop.
* ``scalar_step(...)``: a loop over examples and over every neuron and weight, on scalars only.
  It runs as plain Python, or compiled by Numba (``compiled=True``) from the same source, which
  shows that the interpreter, not the loop, is what vectorization removes.

Each does one gradient-descent step in place on ``parameters`` and returns the cost J (before
the step), with the same math as ``Network``: dZ[L] = (A - Y)/m for the canonical output pairs.
"""
import functools
import math

import numpy as np

from ._layout import flat_layout  # noqa: F401  (the scalar loops' θ layout, re-exported)


def per_example_step(parameters, X, Y, activations, loss, learning_rate, xp=np):
    """One step, one example at a time: X (n0, m), Y (nL, m) one-hot/0-1/targets; returns J. With
    ``xp`` = cupy (the GPU twin) every operation is a CuPy one and J stays on the device (a 0-d array:
    no synchronization per example); parameters (W1, b1, ... of xp) are updated in place."""
    L, m = len(activations), X.shape[1]
    grads = {f"d{k}": xp.zeros_like(v) for k, v in parameters.items()}
    cost = xp.zeros((), np.float64) if xp is np else xp.zeros((), X.dtype)
    for i in range(m):
        a, cache = X[:, i:i + 1], []
        for l in range(1, L + 1):
            z = parameters[f"W{l}"] @ a + parameters[f"b{l}"]
            cache.append((a, z))
            a = activations[l - 1].forward(xp, z)
        y = Y[:, i:i + 1]
        cost += loss.total(xp, z, a, y)
        if activations[-1].name == loss.canonical:
            dz = (a - y) / m
        else:
            dz = activations[-1].backward(xp, loss.dA(xp, a, y) / m, z, a)
        for l in range(L, 0, -1):
            a_prev, _ = cache[l - 1]
            grads[f"dW{l}"] += dz @ a_prev.T
            grads[f"db{l}"] += dz
            if l > 1:
                dz = activations[l - 2].backward(xp, parameters[f"W{l}"].T @ dz, cache[l - 2][1], a_prev)
    for key in parameters:
        parameters[key] -= learning_rate * grads[f"d{key}"]
    return float(cost) / m if xp is np else cost / m


def _scalar_step_source(g_hidden, dg_hidden, g_out, dg_out, cost_out, softmax, canonical):
    """The scalar loop, closed over scalar functions; compiled or not by the caller."""

    def step(X, Y, theta, grad, dims, pofs, z, a, dz, learning_rate):
        """z, a, dz: scratch vectors with room for every layer's units (offset by layer)."""
        L, m = dims.shape[0] - 1, X.shape[1]
        for p in range(grad.shape[0]):
            grad[p] = 0.0
        cost = 0.0
        for i in range(m):
            # forward, neuron by neuron; layer l's units start at uo[l] = dims[1] + ... + dims[l-1]
            uo_prev, uo = 0, 0
            for l in range(1, L + 1):
                n, k, po = dims[l], dims[l - 1], pofs[l - 1]
                for j in range(n):
                    s = theta[po + n * k + j]
                    for q in range(k):
                        s += theta[po + j * k + q] * (X[q, i] if l == 1 else a[uo_prev + q])
                    z[uo + j] = s
                    if l < L:
                        a[uo + j] = g_hidden(s)
                    elif not softmax:
                        a[uo + j] = g_out(s)
                uo_prev, uo = uo, uo + n
            n, uo_last = dims[L], uo_prev
            if softmax:
                zmax = z[uo_last]
                for j in range(n):
                    zmax = max(zmax, z[uo_last + j])
                total = 0.0
                for j in range(n):
                    a[uo_last + j] = math.exp(z[uo_last + j] - zmax)
                    total += a[uo_last + j]
                for j in range(n):
                    a[uo_last + j] /= total
                    if Y[j, i] != 0:
                        cost -= Y[j, i] * (z[uo_last + j] - zmax - math.log(total))
            # output delta
            for j in range(n):
                zj, aj, yj = z[uo_last + j], a[uo_last + j], Y[j, i]
                if not softmax:
                    cost += cost_out(zj, aj, yj)
                d = aj - yj
                if not canonical:
                    d *= dg_out(zj, aj)
                dz[uo_last + j] = d / m
            # backward, weight by weight
            uo = uo_last
            for l in range(L, 0, -1):
                n, k, po = dims[l], dims[l - 1], pofs[l - 1]
                uo_prev = uo - k
                for j in range(n):
                    d = dz[uo + j]
                    grad[po + n * k + j] += d
                    for q in range(k):
                        grad[po + j * k + q] += d * (X[q, i] if l == 1 else a[uo_prev + q])
                if l > 1:
                    for q in range(k):
                        s = 0.0
                        for j in range(n):
                            s += theta[po + j * k + q] * dz[uo + j]
                        dz[uo_prev + q] = s * dg_hidden(z[uo_prev + q], a[uo_prev + q])
                uo = uo_prev
        for p in range(theta.shape[0]):
            theta[p] -= learning_rate * grad[p]
        return cost / m

    return step


@functools.lru_cache(maxsize=None)
def scalar_step(hidden, output, loss, compiled=False):
    """The scalar loop step for these activations and loss, as step(X, Y, θ, dθ, dims, pofs,
    z, a, dz, α) -> J on a flat θ laid out W1, b1, W2, b2, ... (float64)."""
    softmax = output.name == "softmax"
    g_hidden, dg_hidden = hidden.scalar(float)
    g_out, dg_out = (g_hidden, dg_hidden) if softmax else output.scalar(float)
    cost_out = (lambda z, a, y: 0.0) if softmax else loss.scalar(float)
    functions = (g_hidden, dg_hidden, g_out, dg_out, cost_out)
    if compiled:
        from .backends._numba_kernels import jitable, njit
        return njit(_scalar_step_source(*map(jitable, functions), softmax, output.name == loss.canonical))
    return _scalar_step_source(*functions, softmax, output.name == loss.canonical)

