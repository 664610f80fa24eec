"""A float64 NumPy oracle, written apart from fastdnn on purpose (other formulas where possible).

Every function takes and returns float64 arrays; nothing here imports fastdnn.
"""
import numpy as np

SLOPE = 0.01   # leaky_relu default


def g(name, Z):
    """Activation forward. One line per activation (the test oracle's half of 'add an activation')."""
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * Z))
    if name == "tanh":
        return np.tanh(Z)
    if name == "relu":
        return Z * (Z > 0)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, SLOPE * Z)
    if name == "linear":
        return Z.copy()
    if name == "softmax":
        E = np.exp(Z - Z.max(axis=0))
        return E / E.sum(axis=0)
    raise KeyError(name)


def dg_times(name, dA, Z):
    """dA * g'(Z) (for softmax: the Jacobian-vector product per column)."""
    A = g(name, Z)
    if name == "sigmoid":
        return dA * A * (1.0 - A)
    if name == "tanh":
        return dA / np.cosh(np.clip(Z, -300, 300)) ** 2
    if name == "relu":
        return dA * (Z > 0)
    if name == "leaky_relu":
        return dA * np.where(Z > 0, 1.0, SLOPE)
    if name == "linear":
        return dA.copy()
    if name == "softmax":
        m = Z.shape[1]
        out = np.empty_like(Z)
        for j in range(m):
            a = A[:, j]
            out[:, j] = (np.diag(a) - np.outer(a, a)) @ dA[:, j]
        return out
    raise KeyError(name)


def cost(loss, Z, Y):
    """J = (1/m) Σ L from the output Z (moderate values: direct formulas)."""
    m = Z.shape[1]
    if loss == "bce":
        A = g("sigmoid", Z)
        return -np.sum(Y * np.log(A) + (1 - Y) * np.log(1 - A)) / m
    if loss == "ce":
        return -np.sum(Y * np.log(g("softmax", Z))) / m
    if loss == "mse":
        return np.sum((Z - Y) ** 2) / (2 * m)
    raise KeyError(loss)


def dA_of_loss(loss, A, Y):
    """∂L/∂A per example (no 1/m)."""
    if loss == "bce":
        return (A - Y) / (A * (1 - A))
    if loss == "ce":
        return -Y / A
    if loss == "mse":
        return A - Y
    raise KeyError(loss)


def forward(params, X, acts):
    """Zs, As with As[0] = X, following Z = W A + b, A = g(Z) layer by layer."""
    As, Zs = [X], [None]
    for l, name in enumerate(acts, start=1):
        Z = params[f"W{l}"] @ As[-1] + params[f"b{l}"]
        Zs.append(Z)
        As.append(g(name, Z))
    return Zs, As


def network_cost(params, X, Y, acts, loss):
    Zs, As = forward(params, X, acts)
    if loss == "mse":
        return np.sum((As[-1] - Y) ** 2) / (2 * X.shape[1])
    return cost(loss, Zs[-1], Y)


def network_gradients(params, X, Y, acts, loss):
    """Backprop in float64, from dA[L] = ∂L/∂A[L] and the 1/m in dW, db (the course's placement)."""
    Zs, As = forward(params, X, acts)
    L, m = len(acts), X.shape[1]
    grads = {}
    dA = dA_of_loss(loss, As[-1], Y)
    for l in range(L, 0, -1):
        dZ = dg_times(acts[l - 1], dA, Zs[l])
        grads[f"dW{l}"] = dZ @ As[l - 1].T / m
        grads[f"db{l}"] = dZ.sum(axis=1, keepdims=True) / m
        dA = params[f"W{l}"].T @ dZ
    return grads


def optimizer_steps(name, theta, grads, lr, **h):
    """θ after applying the optimizer to each gradient in turn (float64, written from the papers'/course's
    formulas); grads: a list of gradient vectors."""
    theta = theta.astype(np.float64).copy()
    v, s = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if name == "gd":
            theta = theta - lr * g
        elif name == "momentum":
            v = h.get("beta", 0.9) * v + (1 - h.get("beta", 0.9)) * g
            theta = theta - lr * v
        elif name == "rmsprop":
            beta, eps = h.get("beta", 0.999), h.get("epsilon", 1e-8)
            s = beta * s + (1 - beta) * g ** 2
            theta = theta - lr * g / (np.sqrt(s) + eps)
        elif name == "adam":
            b1, b2, eps = h.get("beta1", 0.9), h.get("beta2", 0.999), h.get("epsilon", 1e-8)
            v = b1 * v + (1 - b1) * g
            s = b2 * s + (1 - b2) * g ** 2
            theta = theta - lr * (v / (1 - b1 ** t)) / (np.sqrt(s / (1 - b2 ** t)) + eps)
        elif name == "adagrad":
            s = s + g ** 2
            theta = theta - lr * g / (np.sqrt(s) + h.get("epsilon", 1e-8))
        else:
            raise KeyError(name)
    return theta


def regularized_step(params, X, Y, acts, loss, lr, l2=0.0, masks=None):
    """One gradient-descent step with L2 and inverted dropout (masks[l]: D[l] already scaled by
    1/keep_prob, for hidden layers), returning (J with its L2 term, new params)."""
    L, m = len(acts), X.shape[1]
    As, Zs, A = [X], [None], X
    for l in range(1, L + 1):
        Z = params[f"W{l}"] @ A + params[f"b{l}"]
        A = g(acts[l - 1], Z)
        Zs.append(Z)
        As.append(A * masks[l] if masks and l in masks else A)
        A = As[-1]
    Aout = g(acts[-1], Zs[-1])
    J = (np.sum((Aout - Y) ** 2) / (2 * m) if loss == "mse" else cost(loss, Zs[-1], Y))
    J += l2 / (2 * m) * sum(np.sum(params[f"W{l}"] ** 2) for l in range(1, L + 1))
    new = {}
    dA = dA_of_loss(loss, Aout, Y)
    for l in range(L, 0, -1):
        if masks and l in masks and l < L:
            dA = dA * masks[l]
        dZ = dg_times(acts[l - 1], dA, Zs[l])
        dW = dZ @ As[l - 1].T / m + l2 / m * params[f"W{l}"]
        db = dZ.sum(axis=1, keepdims=True) / m
        dA = params[f"W{l}"].T @ dZ
        new[f"W{l}"], new[f"b{l}"] = params[f"W{l}"] - lr * dW, params[f"b{l}"] - lr * db
    return J, new
