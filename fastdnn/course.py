"""The course's functional API, with its names, argument order, return structures and numerics.

Relu hidden layers and a sigmoid output; caches as in the assignment:
``linear_cache = (A_prev, W, b)``, ``activation_cache = Z``, ``cache = (linear_cache, activation_cache)``.
Every function runs on the array type it is given (NumPy, or CuPy arrays on a GPU).
The initializers reproduce the course's seeding: ``np.random.seed(seed)`` then one ``randn`` per
layer in layer order, so they draw on the host with NumPy's legacy global generator.
"""
import copy

import numpy as np

from ._checks import layer_name
from ._xp import array_namespace
from .activations import ReLU, Sigmoid
from .errors import ShapeError


def initialize_parameters(n_x, n_h, n_y, seed=1):
    """W1 (n_h, n_x), b1 (n_h, 1), W2 (n_y, n_h), b2 (n_y, 1): randn * 0.01 after np.random.seed(seed)."""
    np.random.seed(seed)
    W1 = np.random.randn(n_h, n_x) * 0.01
    b1 = np.zeros((n_h, 1))
    W2 = np.random.randn(n_y, n_h) * 0.01
    b2 = np.zeros((n_y, 1))
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


def initialize_parameters_deep(layer_dims, seed=1, scale="sqrt"):
    """W[l] (n_l, n_{l-1}) = randn * scale, b[l] = 0 (n_l, 1), after np.random.seed(seed).

    scale="sqrt" divides by sqrt(n[l-1]) (the course's application, seed 1); a number multiplies
    (the course's step-by-step version: seed=3, scale=0.01)."""
    np.random.seed(seed)
    parameters = {}
    for l in range(1, len(layer_dims)):
        W = np.random.randn(layer_dims[l], layer_dims[l - 1])
        parameters["W" + str(l)] = W / np.sqrt(layer_dims[l - 1]) if scale == "sqrt" else W * scale
        parameters["b" + str(l)] = np.zeros((layer_dims[l], 1))
    return parameters


def sigmoid(Z):
    """A = 1 / (1 + exp(-Z)); returns A, cache = Z."""
    xp = array_namespace(Z)
    with np.errstate(over="ignore"):
        A = 1 / (1 + xp.exp(-Z))
    return A, Z


def relu(Z):
    """A = max(0, Z); returns A, cache = Z."""
    return array_namespace(Z).maximum(0, Z), Z


def relu_backward(dA, cache):
    """dZ = dA where Z > 0, else 0."""
    Z = cache
    dZ = array_namespace(dA).array(dA, copy=True)
    dZ[Z <= 0] = 0
    return dZ


def sigmoid_backward(dA, cache):
    """dZ = dA * s * (1 - s), s = sigmoid(Z)."""
    s, _ = sigmoid(cache)
    return dA * s * (1 - s)


_FORWARD = {"sigmoid": sigmoid, "relu": relu}
_BACKWARD = {"sigmoid": sigmoid_backward, "relu": relu_backward}
_ACTIVATION = {"sigmoid": Sigmoid(), "relu": ReLU()}


def linear_forward(A, W, b):
    """Z = W · A + b. W (n_l, n_{l-1}), A (n_{l-1}, m), b (n_l, 1) -> Z (n_l, m), cache (A, W, b)."""
    Z = array_namespace(A, W).dot(W, A) + b
    return Z, (A, W, b)


def linear_activation_forward(A_prev, W, b, activation):
    """A = g(W · A_prev + b) for activation 'sigmoid' or 'relu'; returns A, (linear_cache, Z)."""
    Z, linear_cache = linear_forward(A_prev, W, b)
    A, activation_cache = _FORWARD[activation](Z)
    return A, (linear_cache, activation_cache)


def L_model_forward(X, parameters):
    """[LINEAR->RELU]*(L-1) -> LINEAR->SIGMOID. X (n0, m) -> AL (1, m), caches (L entries)."""
    caches = []
    A = X
    L = len(parameters) // 2
    for l in range(1, L + 1):
        W = parameters["W" + str(l)]
        activation = "relu" if l < L else "sigmoid"
        if A.ndim != 2 or A.shape[0] != W.shape[1]:
            what = "X" if l == 1 else "A_prev"
            raise ShapeError(f"{layer_name(l, L, _ACTIVATION[activation])}: {what} has shape "
                             f"{tuple(A.shape)}, expected ({W.shape[1]}, m) to match W{l} {tuple(W.shape)}")
        A, cache = linear_activation_forward(A, W, parameters["b" + str(l)], activation)
        caches.append(cache)
    return A, caches


def compute_cost(AL, Y):
    """cost = -(1/m) Σ [Y log AL + (1-Y) log(1-AL)], a 0-d array. AL, Y (1, m)."""
    xp = array_namespace(AL, Y)
    m = Y.shape[1]
    cost = (1. / m) * (-xp.dot(Y, xp.log(AL).T) - xp.dot(1 - Y, xp.log(1 - AL).T))
    return xp.squeeze(cost)


def linear_backward(dZ, cache):
    """dW = (1/m) dZ · A_prevᵀ, db = (1/m) Σ_cols dZ, dA_prev = Wᵀ · dZ; returns dA_prev, dW, db."""
    A_prev, W, b = cache
    xp = array_namespace(dZ, A_prev)
    m = A_prev.shape[1]
    dW = 1. / m * xp.dot(dZ, A_prev.T)
    db = 1. / m * xp.sum(dZ, axis=1, keepdims=True)
    dA_prev = xp.dot(W.T, dZ)
    return dA_prev, dW, db


def linear_activation_backward(dA, cache, activation):
    """dZ = dA * g'(Z), then linear_backward; returns dA_prev, dW, db."""
    linear_cache, activation_cache = cache
    dZ = _BACKWARD[activation](dA, activation_cache)
    return linear_backward(dZ, linear_cache)


def L_model_backward(AL, Y, caches):
    """grads {'dA{l-1}', 'dW{l}', 'db{l}'} for l = L..1, from dAL = -(Y/AL - (1-Y)/(1-AL))."""
    grads = {}
    L = len(caches)
    Y = Y.reshape(AL.shape)
    dAL = - (Y / AL - (1 - Y) / (1 - AL))
    current_cache = caches[L - 1]
    grads["dA" + str(L - 1)], grads["dW" + str(L)], grads["db" + str(L)] = \
        linear_activation_backward(dAL, current_cache, "sigmoid")
    for l in reversed(range(L - 1)):
        current_cache = caches[l]
        dA_prev, dW, db = linear_activation_backward(grads["dA" + str(l + 1)], current_cache, "relu")
        grads["dA" + str(l)] = dA_prev
        grads["dW" + str(l + 1)] = dW
        grads["db" + str(l + 1)] = db
    return grads


def update_parameters(params, grads, learning_rate):
    """W[l] = W[l] - α dW[l], b[l] = b[l] - α db[l], on a copy of params."""
    parameters = copy.deepcopy(params)
    L = len(parameters) // 2
    for l in range(L):
        parameters["W" + str(l + 1)] = parameters["W" + str(l + 1)] - learning_rate * grads["dW" + str(l + 1)]
        parameters["b" + str(l + 1)] = parameters["b" + str(l + 1)] - learning_rate * grads["db" + str(l + 1)]
    return parameters


def predict(X, y, parameters, print_accuracy=True):
    """p (1, m) of 0/1 with p = 1 where AL > 0.5; prints the accuracy against y as the course does."""
    xp = array_namespace(X)
    m = X.shape[1]
    probas, _ = L_model_forward(X, parameters)
    p = xp.zeros((1, m))
    p[probas > 0.5] = 1
    if print_accuracy:
        print("Accuracy: " + str(float(xp.sum((p == y) / m))))
    return p


def L_layer_model(X, Y, layers_dims, learning_rate=0.0075, num_iterations=3000, print_cost=False,
                  seed=1):
    """The course's L-layer training loop; returns parameters and the costs every 100 iterations."""
    costs = []
    parameters = initialize_parameters_deep(layers_dims, seed=seed)
    for i in range(num_iterations):
        AL, caches = L_model_forward(X, parameters)
        cost = compute_cost(AL, Y)
        grads = L_model_backward(AL, Y, caches)
        parameters = update_parameters(parameters, grads, learning_rate)
        if i % 100 == 0 or i == num_iterations - 1:
            if print_cost:
                print(f"Cost after iteration {i}: {float(cost)}")
            if i % 100 == 0:
                costs.append(float(cost))
    return parameters, costs


# --- "Improving Deep Neural Networks": mini-batches, momentum, Adam ------------------------------
def random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    """[(mini_batch_X, mini_batch_Y), ...]: np.random.seed(seed), one permutation of the m columns,
    then consecutive slices of mini_batch_size (the last one smaller when m does not divide)."""
    np.random.seed(seed)
    m = X.shape[1]
    permutation = list(np.random.permutation(m))
    shuffled_X = X[:, permutation]
    shuffled_Y = Y[:, permutation].reshape((Y.shape[0], m))
    mini_batches = []
    for k in range(0, m, mini_batch_size):
        mini_batches.append((shuffled_X[:, k:k + mini_batch_size], shuffled_Y[:, k:k + mini_batch_size]))
    return mini_batches


def initialize_velocity(parameters):
    """v = {'dW1': 0, 'db1': 0, ...} shaped like the parameters."""
    L = len(parameters) // 2
    xp = array_namespace(parameters["W1"])
    v = {}
    for l in range(1, L + 1):
        v["dW" + str(l)] = xp.zeros(parameters["W" + str(l)].shape)
        v["db" + str(l)] = xp.zeros(parameters["b" + str(l)].shape)
    return v


def update_parameters_with_momentum(parameters, grads, v, beta, learning_rate):
    """v = β v + (1-β) grad; W = W - α v (in place on parameters and v); returns parameters, v."""
    L = len(parameters) // 2
    for l in range(1, L + 1):
        for p in ("W", "b"):
            key = "d" + p + str(l)
            v[key] = beta * v[key] + (1 - beta) * grads[key]
            parameters[p + str(l)] = parameters[p + str(l)] - learning_rate * v[key]
    return parameters, v


def initialize_adam(parameters):
    """v, s = zeros shaped like the parameters, keyed dW1, db1, ..."""
    return initialize_velocity(parameters), initialize_velocity(parameters)


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01, beta1=0.9, beta2=0.999,
                                epsilon=1e-8):
    """Adam with bias correction at step t; returns parameters, v, s, v_corrected, s_corrected."""
    xp = array_namespace(parameters["W1"])
    L = len(parameters) // 2
    v_corrected, s_corrected = {}, {}
    for l in range(1, L + 1):
        for p in ("W", "b"):
            key = "d" + p + str(l)
            v[key] = beta1 * v[key] + (1 - beta1) * grads[key]
            v_corrected[key] = v[key] / (1 - beta1 ** t)
            s[key] = beta2 * s[key] + (1 - beta2) * (grads[key] ** 2)
            s_corrected[key] = s[key] / (1 - beta2 ** t)
            parameters[p + str(l)] = parameters[p + str(l)] - learning_rate * v_corrected[key] / (
                xp.sqrt(s_corrected[key]) + epsilon)
    return parameters, v, s, v_corrected, s_corrected
