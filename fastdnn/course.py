"""The course's functional API, with its names, argument order, return structures and numerics.

Course 1 (the L-layer network, "step by step" and "application"): relu hidden layers and a sigmoid
output; caches ``linear_cache = (A_prev, W, b)``, ``activation_cache = Z``,
``cache = (linear_cache, activation_cache)``. Course 2: the initialization, regularization
(L2, dropout), gradient checking and optimization assignments, whose networks keep their flat
caches ``(Z1, A1, W1, b1, Z2, ...)`` (with dropout ``(Z1, D1, A1, W1, b1, ...)``).
Every function runs on the array type it is given (NumPy, or CuPy arrays on a GPU).
The initializers and the dropout masks reproduce the course's seeding: ``np.random.seed(seed)``
then ``randn`` / ``rand`` in the course's order, so they draw on the host with NumPy's legacy global
generator (masks are then moved to the arrays' device).
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
    """W[l] (n_l, n_{l-1}) = randn / sqrt(n_{l-1}) or randn * scale, b[l] = 0 (n_l, 1), after
    np.random.seed(seed).

    Two assignments define this name differently. The default, ``seed=1, scale="sqrt"``, is the
    "application" assignment's (the cat network; what ``L_layer_model`` uses): randn / sqrt(n[l-1]).
    The "step by step" assignment's is ``initialize_parameters_deep(layer_dims, seed=3, scale=0.01)``:
    randn * 0.01. Any number as ``scale`` multiplies."""
    if isinstance(scale, str) and scale != "sqrt":
        raise ValueError(f"scale must be 'sqrt' or a number; got {scale!r}")
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


def _check_A_prev(shape, W, b, l, L, activation):
    """A_prev (X for l = 1) must be (n_{l-1}, m) with n_{l-1} = W[l].shape[1], and b[l] (n_l, 1): a (n_l,)
    b would broadcast along the examples."""
    where = layer_name(l, L, _ACTIVATION[activation])
    if len(shape) != 2 or shape[0] != W.shape[1]:
        what = "X" if l == 1 else "A_prev"
        raise ShapeError(f"{where}: {what} has shape {tuple(shape)}, expected ({W.shape[1]}, m) to match "
                         f"W{l} {tuple(W.shape)}")
    if tuple(b.shape) != (W.shape[0], 1):
        raise ShapeError(f"{where}: b{l} has shape {tuple(b.shape)}, expected ({W.shape[0]}, 1) to match "
                         f"W{l} {tuple(W.shape)}")


def _check_Y(where, Y, AL, reshaped=False):
    """Y must be AL's shape (1, m), or hold its m values when the course reshapes it (``reshaped``)."""
    if tuple(Y.shape) != tuple(AL.shape) and not (reshaped and Y.size == AL.size):
        raise ShapeError(f"{where}: Y has shape {tuple(Y.shape)}, expected {tuple(AL.shape)} to match AL "
                         f"{tuple(AL.shape)}")


def L_model_forward(X, parameters):
    """[LINEAR->RELU]*(L-1) -> LINEAR->SIGMOID. X (n0, m) -> AL (1, m), caches (L entries)."""
    caches = []
    A = X
    L = len(parameters) // 2
    for l in range(1, L + 1):
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        activation = "relu" if l < L else "sigmoid"
        _check_A_prev(A.shape, W, b, l, L, activation)
        A, cache = linear_activation_forward(A, W, b, activation)
        caches.append(cache)
    return A, caches


def compute_cost(AL, Y):
    """cost = -(1/m) Σ [Y log AL + (1-Y) log(1-AL)], a 0-d array. AL, Y (1, m)."""
    xp = array_namespace(AL, Y)
    _check_Y("compute_cost", Y, AL)
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
    _check_Y("L_model_backward", Y, AL, reshaped=True)
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
    """The course's L-layer training loop; returns parameters and costs, the 0-d arrays compute_cost
    returned at iterations 0, 100, 200, ... (as the course records them).

    Initialized with initialize_parameters_deep(layers_dims, seed) (randn / sqrt(n[l-1]), seed 1),
    moved to X's array type and, for a float X, to its dtype (Y too), so float32 stays float32."""
    X, Y, parameters = _like_X(X, Y, initialize_parameters_deep(layers_dims, seed=seed))
    costs = []
    for i in range(num_iterations):
        AL, caches = L_model_forward(X, parameters)
        cost = compute_cost(AL, Y)
        grads = L_model_backward(AL, Y, caches)
        parameters = update_parameters(parameters, grads, learning_rate)
        _record(costs, cost, i, num_iterations, print_cost)
    return parameters, costs


def two_layer_model(X, Y, layers_dims, learning_rate=0.0075, num_iterations=3000, print_cost=False):
    """LINEAR->RELU->LINEAR->SIGMOID trained by gradient descent (course 1, the application):
    layers_dims = (n_x, n_h, n_y); returns parameters and the costs of iterations 0, 100, ...

    Starts from initialize_parameters(n_x, n_h, n_y) (np.random.seed(1), randn * 0.01) on X's array
    type (and dtype, for a float X); dA2 = -(Y / A2 - (1 - Y) / (1 - A2)) as in the course."""
    np.random.seed(1)
    n_x, n_h, n_y = layers_dims
    X, Y, parameters = _like_X(X, Y, initialize_parameters(n_x, n_h, n_y))
    grads, costs = {}, []
    for i in range(num_iterations):
        A1, cache1 = linear_activation_forward(X, parameters["W1"], parameters["b1"], "relu")
        A2, cache2 = linear_activation_forward(A1, parameters["W2"], parameters["b2"], "sigmoid")
        cost = compute_cost(A2, Y)
        dA2 = -(Y / A2 - (1 - Y) / (1 - A2))
        dA1, grads["dW2"], grads["db2"] = linear_activation_backward(dA2, cache2, "sigmoid")
        _, grads["dW1"], grads["db1"] = linear_activation_backward(dA1, cache1, "relu")
        parameters = update_parameters(parameters, grads, learning_rate)
        _record(costs, cost, i, num_iterations, print_cost)
    return parameters, costs


def _like_X(X, Y, parameters):
    """Parameters (drawn on the host in float64) on X's array type, in X's dtype when X is float;
    Y in that dtype too (its 0/1 values are exact)."""
    xp = array_namespace(X)
    dtype = X.dtype if X.dtype.kind == "f" else None
    parameters = {key: xp.asarray(value, dtype=dtype) for key, value in parameters.items()}
    return X, (xp.asarray(Y, dtype=dtype) if dtype is not None else Y), parameters


def _record(costs, cost, i, num_iterations, print_cost):
    """The course's bookkeeping: keep the cost every 100 iterations, print it then and at the end."""
    if print_cost and (i % 100 == 0 or i == num_iterations - 1):
        print(f"Cost after iteration {i}: {float(cost)}")
    if i % 100 == 0:
        costs.append(cost)


# --- "Improving Deep Neural Networks", week 1: initialization ----------------------------------
def initialize_parameters_zeros(layers_dims):
    """W[l] = 0 (n_l, n_{l-1}), b[l] = 0 (n_l, 1): every unit of a layer stays the same (symmetry)."""
    parameters = {}
    for l in range(1, len(layers_dims)):
        parameters["W" + str(l)] = np.zeros((layers_dims[l], layers_dims[l - 1]))
        parameters["b" + str(l)] = np.zeros((layers_dims[l], 1))
    return parameters


def initialize_parameters_random(layers_dims, seed=3):
    """W[l] = randn(n_l, n_{l-1}) * 10 (the assignment's "large" weights), b[l] = 0, np.random.seed(3)."""
    return initialize_parameters_deep(layers_dims, seed=seed, scale=10)


def initialize_parameters_he(layers_dims, seed=3):
    """W[l] = randn(n_l, n_{l-1}) * sqrt(2 / n_{l-1}) (He et al.), b[l] = 0, after np.random.seed(3)."""
    np.random.seed(seed)
    parameters = {}
    for l in range(1, len(layers_dims)):
        parameters["W" + str(l)] = np.random.randn(layers_dims[l], layers_dims[l - 1]) * np.sqrt(
            2. / layers_dims[l - 1])
        parameters["b" + str(l)] = np.zeros((layers_dims[l], 1))
    return parameters


# --- week 1: L2 regularization and dropout (the assignment's 3-layer net, any depth here) --------
# The nets are LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID in the assignment; these functions take
# any number of relu layers, and are the assignment's own for three layers. Caches are flat tuples:
# (Z1, A1, W1, b1, ..., ZL, AL, WL, bL), with dropout (Z1, D1, A1, W1, b1, ..., ZL, AL, WL, bL).
def _layer_count(dictionary, prefix="W"):
    """L: how many of prefix1, prefix2, ... the dictionary holds (at least one)."""
    L = 0
    while prefix + str(L + 1) in dictionary:
        L += 1
    if L == 0:
        raise KeyError(f"no {prefix}1 among the keys {sorted(dictionary)}")
    return L


def _labels(Y, A):
    """Y in A's array type and dtype (0/1 are exact), so float32 stays float32."""
    return array_namespace(A).asarray(Y, dtype=A.dtype)


def _check_keep_prob(keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")


def _cross_entropy(A3, Y):
    """-(1/m) Σ [Y log A3 + (1-Y) log(1-A3)] with NaN terms (0 · log 0) skipped, as the
    regularization assignment's own compute_cost does; m = Y.shape[1]."""
    xp = array_namespace(A3)
    Y = _labels(Y, A3)
    _check_Y("the cost", Y, A3)
    with np.errstate(divide="ignore", invalid="ignore"):
        logprobs = -xp.log(A3) * Y + -xp.log(1 - A3) * (1 - Y)
    return 1. / Y.shape[1] * xp.nansum(logprobs)


def compute_cost_with_regularization(A3, Y, parameters, lambd):
    """cost = cross-entropy(A3, Y) + (1/m)(λ/2) Σ_l ||W[l]||²_F. A3, Y (1, m); every W[l] of parameters."""
    xp = array_namespace(A3)
    m = Y.shape[1]
    squares = sum(xp.sum(xp.square(parameters["W" + str(l)])) for l in range(1, _layer_count(parameters) + 1))
    return _cross_entropy(A3, Y) + 1. / m * (lambd / 2) * squares


def _unpack(cache, per_hidden):
    """Per layer, the cache entries as dicts: hidden layers have per_hidden entries, the output 4."""
    names = ("Z", "D", "A", "W", "b") if per_hidden == 5 else ("Z", "A", "W", "b")
    L, rest = divmod(len(cache) + per_hidden - 4, per_hidden)
    if rest or L < 1:
        layout = "(Z1, D1, A1, W1, b1, ..., ZL, AL, WL, bL)" if per_hidden == 5 else "(Z1, A1, W1, b1, ...)"
        raise ValueError(f"cache has {len(cache)} entries; expected the layout {layout}")
    layers, start = [], 0
    for l in range(1, L + 1):
        keys = names if l < L else ("Z", "A", "W", "b")
        layers.append(dict(zip(keys, cache[start:start + len(keys)])))
        start += len(keys)
    return layers


def _relu_sigmoid_backward(X, Y, layers, lambd=0., keep_prob=None):
    """dZ[L] = A[L] - Y; dW[l] = (1/m) dZ[l] · A[l-1]ᵀ + (λ/m) W[l]; db[l] = (1/m) Σ_cols dZ[l];
    dA[l-1] = W[l]ᵀ · dZ[l] (times D[l-1] / keep_prob with dropout); dZ[l-1] = dA[l-1] * (A[l-1] > 0)."""
    xp = array_namespace(X, layers[-1]["A"])
    m = X.shape[1]
    L = len(layers)
    gradients = {}
    dZ = layers[-1]["A"] - _labels(Y, layers[-1]["A"])
    for l in range(L, 0, -1):
        layer = layers[l - 1]
        A_prev = X if l == 1 else layers[l - 2]["A"]
        gradients["dZ" + str(l)] = dZ
        gradients["dW" + str(l)] = 1. / m * xp.dot(dZ, A_prev.T)
        if lambd:
            gradients["dW" + str(l)] = gradients["dW" + str(l)] + lambd / m * layer["W"]
        gradients["db" + str(l)] = 1. / m * xp.sum(dZ, axis=1, keepdims=True)
        if l > 1:
            dA = xp.dot(layer["W"].T, dZ)
            if keep_prob is not None:
                dA = dA * layers[l - 2]["D"]
                dA = dA / keep_prob
            gradients["dA" + str(l - 1)] = dA
            dZ = dA * (A_prev > 0)
    return gradients


def backward_propagation_with_regularization(X, Y, cache, lambd):
    """Gradients of the L2-regularized cost: dW[l] = (1/m) dZ[l] · A[l-1]ᵀ + (λ/m) W[l], relu g'
    from A > 0. cache (Z1, A1, W1, b1, ...) -> {'dZ3', 'dW3', 'db3', 'dA2', 'dZ2', ..., 'db1'}."""
    return _relu_sigmoid_backward(X, Y, _unpack(cache, 4), lambd=lambd)


def _relu_sigmoid_forward(X, parameters, keep_prob=None, seed=None):
    """[LINEAR->RELU (-> dropout)]*(L-1) -> LINEAR->SIGMOID; returns A[L] and the flat cache.

    Dropout: np.random.seed(seed) unless None, then D[l] = rand(n_l, m) < keep_prob (drawn with
    np.random on the host, layer by layer), A[l] = A[l] * D[l] / keep_prob. Shapes are checked first."""
    xp = array_namespace(X, parameters["W1"])
    L = _layer_count(parameters)
    shape = X.shape
    for l in range(1, L + 1):
        W = parameters["W" + str(l)]
        _check_A_prev(shape, W, parameters["b" + str(l)], l, L, "relu" if l < L else "sigmoid")
        shape = (W.shape[0], shape[1])
    if keep_prob is not None and seed is not None:
        np.random.seed(seed)
    cache, A = [], X
    for l in range(1, L + 1):
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        Z = xp.dot(W, A) + b
        if l == L:
            A = sigmoid(Z)[0]
            cache += [Z, A, W, b]
        elif keep_prob is None:
            A = xp.maximum(0, Z)
            cache += [Z, A, W, b]
        else:
            A = xp.maximum(0, Z)
            D = xp.asarray(np.random.rand(A.shape[0], A.shape[1]) < keep_prob)
            A = A * D
            A = A / keep_prob
            cache += [Z, D, A, W, b]
    return A, tuple(cache)


def forward_propagation_with_dropout(X, parameters, keep_prob=0.5, seed=1):
    """LINEAR->RELU->DROPOUT->LINEAR->RELU->DROPOUT->LINEAR->SIGMOID: A3 (1, m) and the cache
    (Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3).

    As in the assignment, np.random.seed(1) first (so every call draws the same masks; seed=None
    draws on from NumPy's global generator), then D[l] = np.random.rand(n_l, m) < keep_prob per
    hidden layer, A[l] = A[l] * D[l] / keep_prob. D[l] is a boolean mask (the course's 0/1 values)."""
    _check_keep_prob(keep_prob)
    return _relu_sigmoid_forward(X, parameters, keep_prob, seed)


def backward_propagation_with_dropout(X, Y, cache, keep_prob):
    """Gradients through the same masks: dA[l] = W[l+1]ᵀ · dZ[l+1] * D[l] / keep_prob, dZ[l] = dA[l] *
    (A[l] > 0); cache from forward_propagation_with_dropout -> {'dZ3', 'dW3', 'db3', 'dA2', ..., 'db1'}."""
    _check_keep_prob(keep_prob)
    return _relu_sigmoid_backward(X, Y, _unpack(cache, 5), keep_prob=keep_prob)


# --- week 1: gradient checking ------------------------------------------------------------------
def forward_propagation(x, theta):
    """J(θ) = θ · x, the one-parameter example of the gradient checking assignment."""
    return theta * x


def backward_propagation(x, theta):
    """dJ/dθ = x."""
    return x


def _difference(grad, gradapprox):
    """||grad - gradapprox||₂ / (||grad||₂ + ||gradapprox||₂)."""
    norm = array_namespace(grad, gradapprox).linalg.norm
    return norm(grad - gradapprox) / (norm(grad) + norm(gradapprox))


def _report(difference):
    """The assignment's message: a mistake above 2e-7, else fine."""
    if difference > 2e-7:
        print("\033[93m" + "There is a mistake in the backward propagation! difference = " + str(difference)
              + "\033[0m")
    else:
        print("\033[92m" + "Your backward propagation works perfectly fine! difference = " + str(difference)
              + "\033[0m")


def gradient_check(x, theta, epsilon=1e-7, print_msg=True):
    """difference = |grad - gradapprox| / (|grad| + |gradapprox|), gradapprox = (J(θ+ε) - J(θ-ε)) / 2ε,
    grad = backward_propagation(x, θ); prints the assignment's verdict (print_msg=False: quiet).

    The assignment's current notebook has ``print_msg=False`` by default and calls it with True;
    its older version always printed. Printing by default serves both notebooks' printed outputs."""
    xp = array_namespace(x, theta)
    J_plus = forward_propagation(x, theta + epsilon)
    J_minus = forward_propagation(x, theta - epsilon)
    gradapprox = (J_plus - J_minus) / (2 * epsilon)
    grad = backward_propagation(x, theta)
    difference = _difference(xp.asarray(grad), xp.asarray(gradapprox))
    if print_msg:
        _report(difference)
    return difference


def forward_propagation_n(X, Y, parameters):
    """cost = (1/m) Σ [-Y log A3 - (1-Y) log(1-A3)] of LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID,
    and the cache (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3). X (n0, m); Y (1, m) or (m,)."""
    xp = array_namespace(X, parameters["W1"])
    A3, cache = _relu_sigmoid_forward(X, parameters)
    Y = _labels(Y, A3)
    log_probs = -xp.log(A3) * Y + -xp.log(1 - A3) * (1 - Y)
    return 1. / X.shape[1] * xp.sum(log_probs), cache


def backward_propagation_n(X, Y, cache):
    """The gradients of forward_propagation_n's cost: {'dZ3', 'dW3', 'db3', 'dA2', 'dZ2', ..., 'db1'}
    (the assignment's version has two planted mistakes, in dW2 and db1; this one has none)."""
    return _relu_sigmoid_backward(X, Y, _unpack(cache, 4))


def dictionary_to_vector(parameters):
    """theta (n, 1): W1, b1, W2, b2, ... flattened row by row and stacked; keys: each entry's name."""
    xp = array_namespace(parameters["W1"])
    keys, pieces = [], []
    for l in range(1, _layer_count(parameters) + 1):
        for key in ("W" + str(l), "b" + str(l)):
            pieces.append(xp.reshape(parameters[key], (-1, 1)))
            keys += [key] * pieces[-1].shape[0]
    return xp.concatenate(pieces, axis=0), keys


def vector_to_dictionary(theta, layer_dims=(4, 5, 3, 1)):
    """{'W1': (n1, n0), 'b1': (n1, 1), ...} read back from theta (n, 1) in dictionary_to_vector's order.

    The assignment's version knows one network, layer_dims (4, 5, 3, 1) (W1 (5, 4), ..., b3 (1, 1)),
    the default here; give layer_dims for any other."""
    sizes = [(layer_dims[l], layer_dims[l - 1]) for l in range(1, len(layer_dims))]
    needed = sum(n * (n_prev + 1) for n, n_prev in sizes)
    if theta.shape[0] != needed or theta.size != needed:
        raise ShapeError(f"theta has shape {tuple(theta.shape)}, expected ({needed}, 1) for "
                         f"layer_dims {tuple(layer_dims)}")
    parameters, start = {}, 0
    for l, (n, n_prev) in enumerate(sizes, start=1):
        parameters["W" + str(l)] = theta[start:start + n * n_prev].reshape((n, n_prev))
        start += n * n_prev
        parameters["b" + str(l)] = theta[start:start + n].reshape((n, 1))
        start += n
    return parameters


def gradients_to_vector(gradients):
    """grad (n, 1): dW1, db1, dW2, db2, ... flattened and stacked (other keys, dZ and dA, are left out)."""
    xp = array_namespace(gradients["dW1"])
    pieces = [xp.reshape(gradients[p + str(l)], (-1, 1))
              for l in range(1, _layer_count(gradients, "dW") + 1) for p in ("dW", "db")]
    return xp.concatenate(pieces, axis=0)


def gradient_check_n(parameters, gradients, X, Y, epsilon=1e-7, print_msg=True):
    """difference = ||grad - gradapprox||₂ / (||grad||₂ + ||gradapprox||₂) for every parameter θ_i:
    gradapprox_i = (J(θ + ε e_i) - J(θ - ε e_i)) / 2ε with J = forward_propagation_n's cost.
    Prints the assignment's verdict (print_msg=False: quiet; see gradient_check) and returns the
    difference. The network may have any number of relu layers (the assignment's has three)."""
    xp = array_namespace(X, parameters["W1"])
    parameters_values, _ = dictionary_to_vector(parameters)
    grad = gradients_to_vector(gradients)
    if grad.shape != parameters_values.shape:
        raise ShapeError(f"gradients hold {grad.shape[0]} values, parameters {parameters_values.shape[0]}")
    L = _layer_count(parameters)
    layer_dims = [parameters["W1"].shape[1]] + [parameters["W" + str(l)].shape[0] for l in range(1, L + 1)]
    num_parameters = parameters_values.shape[0]
    J_plus, J_minus = xp.zeros((num_parameters, 1)), xp.zeros((num_parameters, 1))
    gradapprox = xp.zeros((num_parameters, 1))
    for i in range(num_parameters):
        theta_plus = xp.copy(parameters_values)
        theta_plus[i] = theta_plus[i] + epsilon
        J_plus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(theta_plus, layer_dims))
        theta_minus = xp.copy(parameters_values)
        theta_minus[i] = theta_minus[i] - epsilon
        J_minus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(theta_minus, layer_dims))
        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)
    difference = _difference(grad, gradapprox)
    if print_msg:
        _report(difference)
    return difference


# --- "Improving Deep Neural Networks", week 2: mini-batches, gradient descent, momentum, Adam, lr decay
def random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    """[(mini_batch_X, mini_batch_Y), ...]: np.random.seed(seed), one permutation of the m columns,
    then consecutive slices of mini_batch_size (the last one smaller when m does not divide)."""
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, (int, np.integer)) or mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be an integer >= 1; got {mini_batch_size!r}")
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ShapeError(f"random_mini_batches: X {tuple(X.shape)} and Y {tuple(Y.shape)} must be (n, m) and "
                         "(k, m) with the same m")
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
        for p in ("W", "b"):
            v["d" + p + str(l)] = xp.zeros(parameters[p + str(l)].shape, dtype=parameters[p + str(l)].dtype)
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


def update_parameters_with_gd(parameters, grads, learning_rate):
    """W[l] = W[l] - α dW[l], b[l] = b[l] - α db[l] for l = 1..L, stored into parameters; returns it."""
    L = len(parameters) // 2
    for l in range(1, L + 1):
        for p in ("W", "b"):
            parameters[p + str(l)] = parameters[p + str(l)] - learning_rate * grads["d" + p + str(l)]
    return parameters


def update_lr(learning_rate0, epoch_num, decay_rate):
    """α = 1 / (1 + decay_rate · epoch_num) · α0 (decay every epoch)."""
    return 1 / (1 + decay_rate * epoch_num) * learning_rate0


def schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000):
    """α = 1 / (1 + decay_rate · ⌊epoch_num / time_interval⌋) · α0 (steps every time_interval epochs)."""
    return 1 / (1 + decay_rate * np.floor(epoch_num / time_interval)) * learning_rate0
