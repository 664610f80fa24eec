"""Benchmarks of a training step: loops vs vectorized vs fused, against the GEMM floor, the machine's
physical limit, PyTorch and JAX; and of shuffled mini-batch Adam epochs (fastdnn, PyTorch, JAX,
scikit-learn) against the full-batch step of the same batch size.

Every candidate is a zero-argument callable doing one full training step (forward, cost, backward,
update) of the same network on the same data. They are timed interleaved, round by round, so a
slow phase of the machine hits all of them alike; ratios are medians of per-round ratios. The peak
GEMM is one of them in every table, so the physical limit follows the machine too.
Libraries keep their worker threads spinning after a call (OpenBLAS ~0.1 s, PyTorch's OpenMP
pool), which slows whatever runs next on the same cores, so the runner lets them settle before
switching from one library family to another.
"""
import functools
import json
import os
import platform
import sys
import time
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

from . import engine

Config = namedtuple("Config", "name layer_dims m hidden output batch_size", defaults=(None,))

CONFIGS = [
    Config("tiny", [2, 4, 1], 400, "relu", "sigmoid"),
    Config("cat", [12288, 20, 7, 5, 1], 209, "relu", "sigmoid"),
    Config("mnist-256", [784, 256, 128, 10], 256, "relu", "softmax"),
    Config("mnist-2048", [784, 256, 128, 10], 2048, "relu", "softmax"),
    Config("wide", [1024, 1024, 1024, 1024, 10], 512, "relu", "softmax"),
]
# the mini-batch section: one shuffled Adam epoch over m examples, batch_size at a time
MINIBATCH_CONFIGS = [
    Config("mnist-16384-b64", [784, 256, 128, 10], 16384, "relu", "softmax", 64),
    Config("mnist-16384-b256", [784, 256, 128, 10], 16384, "relu", "softmax", 256),
    Config("moons-b64", [2, 5, 2, 1], 300, "relu", "sigmoid", 64),
]
# the hidden-activation section: the same network with each hidden activation, per step inside fit (the
# course's planar networks, and an mnist-sized one)
ACTIVATION_CONFIGS = [
    Config("planar-[2,4,1]", [2, 4, 1], 400, "relu", "sigmoid"),
    Config("planar-[2,20,7,5,1]", [2, 20, 7, 5, 1], 400, "relu", "sigmoid"),
    Config("mnist-256", [784, 256, 128, 10], 256, "relu", "softmax"),
]
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
SETTLE_S = 0.15             # OpenBLAS spins ~0.1 s after a call; PyTorch's pool similarly
SLOW_MACHINE = 0.9          # a table timed while the peak GEMM rate read below this share of its best is flagged


@dataclass
class Candidate:
    """One implementation of a step: ``run()`` does a step; ``scale`` extrapolates a step done on
    a subset of the examples to all of them (1.0: measured on all)."""
    name: str
    kind: str                 # floor | vectorized | fused | loop | reference
    family: str               # threads that may spin: numpy (OpenBLAS) | torch
    run: object
    backend: str = ""
    device: str = "cpu"
    scale: float = 1.0
    times: list = field(default_factory=list)
    net: object = None        # the fastdnn Network it steps, if any
    steps: int = 1            # optimizer steps one run() does (a compiled loop, an epoch)
    params: object = None     # () -> {"W1": ..., "b1": ...} as float64 NumPy arrays, if it has any
    steps_done: object = None # () -> optimizer steps taken so far, where the candidate counts them
    note: str = ""            # how its work differs from fastdnn's, if it does
    hidden: str = ""          # its hidden activation, in the hidden-activation section


def problem(config, dtype, seed=0):
    """X (n0, m), Y in the output's label layout (0/1 (1, m) or one-hot (C, m)), host float arrays."""
    rng = np.random.RandomState(seed)
    X = rng.rand(config.layer_dims[0], config.m).astype(dtype)
    C = config.layer_dims[-1]
    if config.output == "softmax":
        Y = np.eye(C, dtype=dtype)[rng.randint(0, C, config.m)].T.copy()
    else:
        Y = rng.randint(0, 2, (C, config.m)).astype(dtype)
    return X, Y


# --- candidates -------------------------------------------------------------------------------
def gemm_floor(config, dtype, xp=np):
    """Only the 3 GEMMs per layer (W·A, dZ·A_prevᵀ, Wᵀ·dZ; none for dA0) into preallocated arrays
    (xp: numpy, or cupy for the GPU floor)."""
    rng = np.random.RandomState(1)
    dims, m = config.layer_dims, config.m
    put = lambda a: xp.asarray(a.astype(dtype))
    W = [put(rng.randn(n, k) * np.sqrt(1 / k)) for k, n in zip(dims[:-1], dims[1:])]
    A = [put(rng.rand(n, m)) for n in dims]     # random, never denormal garbage
    dZ = [put(rng.rand(n, m)) for n in dims]
    dW = [xp.empty_like(w) for w in W]

    def run():
        for l, w in enumerate(W):
            xp.matmul(w, A[l], out=A[l + 1])
        for l in range(len(W) - 1, -1, -1):
            xp.matmul(dZ[l + 1], A[l].T, out=dW[l])
            if l > 0:
                xp.matmul(W[l].T, dZ[l + 1], out=dZ[l])
    return Candidate("gemm floor", "floor", "numpy", run, xp.__name__)


def flops_per_step(config):
    """2 x the multiply-adds of the 3L - 1 GEMMs of a step."""
    dims, m = config.layer_dims, config.m
    macs = sum(n * k * m for k, n in zip(dims[:-1], dims[1:]))
    return 2 * (2 * macs + sum(n * k * m for k, n in zip(dims[1:-1], dims[2:])))


def initial_parameters(config, dtype):
    """The parameters every candidate with parameters starts from: a seed-0 Network's (host arrays)."""
    from . import Network
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    return {k: np.array(v) for k, v in net.parameters.items()}


def _host_params(net):
    return {k: np.asarray(v, dtype=np.float64) for k, v in net.parameters.items()}


def network_step(config, dtype, backend, update=True, learning_rate=1e-3):
    """A fastdnn Network's training step on data already on its device; without ``update``, all of
    it but the parameter update (forward, cost, backward): the difference is what the update costs."""
    from . import Network
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    Xd, Yd = net.prepare(X, Y)
    engine, sync = net.engine, net.backend.synchronize

    if update:
        def run():
            engine.train_step(Xd, Yd, learning_rate, check=True)
            sync()
    else:
        fused = net.backend.fused_step(net.activations, net.loss, net.layer_dims, Xd.shape[1], net.dtype, None)

        def run():
            engine.backprop(Xd, Yd, fused)
            sync()
    kind = "fused" if backend in ("numba", "cupy-fused") else "vectorized"
    name = f"fastdnn {net.backend.name}" + ("" if update else " without the update")
    return Candidate(name, kind, "numpy", run, net.backend.name, net.device, net=net,
                     params=lambda: _host_params(net), steps_done=lambda: net.iteration)


def network_fit_loop(config, dtype, backend, learning_rate=1e-3, steps=None):
    """What ``fit(X, Y, iterations=k)`` costs per step (the compiled loop of full-batch steps where the
    backend has one, with fit's own per-call work spread over k): k = ``steps``, by default as many as
    make ~0.2 GFLOP (3 to 2000)."""
    from . import Network
    if steps is None:
        steps = int(min(2000, max(3, 2e8 // flops_per_step(config))))
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    run = lambda: net.fit(X, Y, iterations=steps, learning_rate=learning_rate, verbose=0, report_every=steps)
    return Candidate(f"fastdnn {net.backend.name} fit loop ({steps} steps)", "fused", "numpy", run,
                     net.backend.name, net.device, net=net, steps=steps, params=lambda: _host_params(net),
                     steps_done=lambda: net.iteration)


def per_example_loop(config, dtype, budget_s):
    """The course's ``for i in range(m)`` with vectors, timed on as many examples as fit the budget."""
    from . import Network, loops
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    parameters, acts, loss = net.parameters, net.activations, net.loss
    k = _examples_within(lambda k: loops.per_example_step(parameters, X[:, :k], Y[:, :k], acts, loss, 1e-3),
                         config.m, budget_s)
    run = lambda: loops.per_example_step(parameters, X[:, :k], Y[:, :k], acts, loss, 1e-3)
    return Candidate("loop over examples (Python)", "loop", "numpy", run, "python", scale=config.m / k)


def scalar_loop(config, dtype, budget_s, compiled):
    """Loops over examples, neurons and weights on scalars: plain Python or compiled by Numba."""
    from . import Network, loops
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    step = loops.scalar_step(net.activations[0], net.activations[-1], net.loss, compiled)
    dims, pofs = loops.flat_layout(config.layer_dims)
    theta = np.concatenate([v.ravel() for v in net.parameters.values()])
    grad, units = np.empty_like(theta), sum(config.layer_dims[1:])
    z, a, dz = (np.empty(units, dtype) for _ in range(3))
    call = lambda k: step(X[:, :k], Y[:, :k], theta, grad, dims, pofs, z, a, dz, 1e-3)
    k = _examples_within(call, config.m, budget_s)
    name = "scalar loops (Numba-compiled)" if compiled else "scalar loops (Python)"
    return Candidate(name, "loop", "numpy", lambda: call(k), "numba" if compiled else "python",
                     scale=config.m / k)


def _examples_within(call, m, budget_s):
    """How many examples (1..m) one call can take within budget_s, from a timed 1-example call."""
    call(1)                                  # JIT and first-touch
    start = time.perf_counter()
    call(1)
    one = max(time.perf_counter() - start, 1e-7)
    return int(max(1, min(m, budget_s / one)))


def torch_autograd(config, dtype, learning_rate=1e-3):
    """PyTorch: nn.Linear layers + autograd + torch.optim.SGD, batch-first as PyTorch expects."""
    import torch
    model, X, Y, criterion = _torch_model(config, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)

    def run():
        optimizer.zero_grad(set_to_none=False)
        criterion(model(X), Y).backward()
        optimizer.step()
    return Candidate("PyTorch autograd + SGD", "reference", "torch", run, f"torch {torch.__version__}",
                     params=lambda: _torch_params(model))


def _torch_model(config, dtype):
    """nn.Sequential of Linear layers starting from initial_parameters; X (m, n0); Y class ids for
    softmax (CrossEntropyLoss) or 0/1 (m, 1) (BCEWithLogitsLoss)."""
    import torch
    tdtype = getattr(torch, dtype)
    layers = []
    for k, n in zip(config.layer_dims[:-1], config.layer_dims[1:]):
        layers += [torch.nn.Linear(k, n, dtype=tdtype), _torch_activation(config.hidden)]
    model = torch.nn.Sequential(*layers[:-1])
    start = initial_parameters(config, dtype)
    with torch.no_grad():
        for l, linear in enumerate(model[::2], start=1):
            linear.weight.copy_(torch.from_numpy(start[f"W{l}"]))
            linear.bias.copy_(torch.from_numpy(start[f"b{l}"].ravel()))
    X, Y = (torch.from_numpy(a.T.copy()) for a in problem(config, dtype))
    if config.output == "softmax":
        return model, X, Y.argmax(dim=1), torch.nn.CrossEntropyLoss()
    return model, X, Y, torch.nn.BCEWithLogitsLoss()


def _torch_params(model):
    out = {}
    for l, linear in enumerate(model[::2], start=1):
        out[f"W{l}"] = linear.weight.detach().double().numpy().copy()
        out[f"b{l}"] = linear.bias.detach().double().numpy().reshape(-1, 1).copy()
    return out


def torch_by_hand(config, dtype, learning_rate=1e-3):
    """PyTorch tensors, the course's math written out (no autograd), course layout (n, m)."""
    import torch
    dims, m = config.layer_dims, config.m
    start = initial_parameters(config, dtype)
    W = [torch.from_numpy(start[f"W{l}"].copy()) for l in range(1, len(dims))]
    b = [torch.from_numpy(start[f"b{l}"].copy()) for l in range(1, len(dims))]
    X, Y = (torch.from_numpy(a) for a in problem(config, dtype))
    g = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[config.hidden]
    dg = {"relu": lambda Z, A: Z > 0, "tanh": lambda Z, A: 1 - A * A, "sigmoid": lambda Z, A: A * (1 - A)}[config.hidden]

    def run():
        with torch.no_grad():
            A, Zs, As = X, [], [X]
            for l in range(len(W)):
                Z = torch.addmm(b[l], W[l], A)
                A = g(Z) if l < len(W) - 1 else (torch.softmax(Z, 0) if config.output == "softmax"
                                                  else torch.sigmoid(Z))
                Zs.append(Z)
                As.append(A)
            dZ = (A - Y) / m
            for l in range(len(W) - 1, -1, -1):
                dW, db = dZ @ As[l].T, dZ.sum(1, keepdim=True)
                if l > 0:
                    dZ = (W[l].T @ dZ) * dg(Zs[l - 1], As[l])
                W[l] -= learning_rate * dW
                b[l] -= learning_rate * db
    params = lambda: {k: v.double().numpy().copy() for l in range(len(W))
                      for k, v in ((f"W{l + 1}", W[l]), (f"b{l + 1}", b[l]))}
    return Candidate("PyTorch by hand (no autograd)", "reference", "torch", run, f"torch {torch.__version__}",
                     params=params)


def _torch_activation(name):
    import torch
    return {"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid()}[name]


# --- JAX ------------------------------------------------------------------------------------------
def _jax():
    """jax and jax.numpy with float64 enabled (arrays carry their dtype explicitly everywhere)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax, jax.numpy


def _jax_cost(config):
    """J(params, X, Y) of the course: Z = W·A + b, hidden g, sigmoid + BCE or softmax + CE, / m
    (written on the logits, log-sigmoid / log-softmax, so its gradient is dZ[L] = A[L] - Y)."""
    jax, jnp = _jax()
    g = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[config.hidden]

    def cost(params, X, Y):
        A = X
        for W, b in params[:-1]:
            A = g(W @ A + b)
        W, b = params[-1]
        Z = W @ A + b
        if config.output == "softmax":
            return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / X.shape[1]
        return -jnp.sum(Y * jax.nn.log_sigmoid(Z) + (1 - Y) * jax.nn.log_sigmoid(-Z)) / X.shape[1]
    return cost


def _jax_start(config, dtype):
    jax, jnp = _jax()
    start = initial_parameters(config, dtype)
    return [(jnp.asarray(start[f"W{l}"]), jnp.asarray(start[f"b{l}"])) for l in range(1, len(config.layer_dims))]


def _jax_params(params):
    return {k: np.asarray(v, dtype=np.float64) for l, (W, b) in enumerate(params, start=1)
            for k, v in ((f"W{l}", W), (f"b{l}", b))}


def _jax_gd(config, learning_rate):
    """(params, X, Y) -> (params - α ∇J, J) (J before the step)."""
    jax, _ = _jax()
    grad = jax.value_and_grad(_jax_cost(config))

    def step(params, X, Y):
        J, d = grad(params, X, Y)
        return jax.tree_util.tree_map(lambda p, dp: p - learning_rate * dp, params, d), J
    return step


def jax_step(config, dtype, learning_rate=1e-3):
    """JAX: one jax.jit gradient-descent step (jax.grad) with the parameters donated, compiled before
    the timing (in the warm-up); each call waits for its result (block_until_ready)."""
    jax, jnp = _jax()
    X, Y = (jnp.asarray(a) for a in problem(config, dtype))
    step = jax.jit(_jax_gd(config, learning_rate), donate_argnums=0)
    state = [_jax_start(config, dtype)]

    def run():
        state[0], J = step(state[0], X, Y)
        jax.block_until_ready((state[0], J))
    return Candidate("JAX jit step (donated)", "reference", "jax", run, f"jax {jax.__version__}",
                     params=lambda: _jax_params(state[0]))


def jax_loop(config, dtype, learning_rate=1e-3, steps=None):
    """JAX: ``steps`` gradient-descent steps in one jax.jit (lax.fori_loop), reported per step; by
    default as many steps as make ~1 GFLOP (2 to 50)."""
    jax, jnp = _jax()
    if steps is None:
        steps = int(min(50, max(2, 1e9 // flops_per_step(config))))
    X, Y = (jnp.asarray(a) for a in problem(config, dtype))
    gd = _jax_gd(config, learning_rate)
    loop = jax.jit(lambda p, X, Y: jax.lax.fori_loop(0, steps, lambda i, q: gd(q, X, Y)[0], p),
                   donate_argnums=0)
    state = [_jax_start(config, dtype)]

    def run():
        state[0] = loop(state[0], X, Y)
        jax.block_until_ready(state[0])
    return Candidate(f"JAX loop in one jit ({steps} steps)", "reference", "jax", run, f"jax {jax.__version__}",
                     steps=steps, params=lambda: _jax_params(state[0]))


def jax_adam_epoch(config, dtype, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, seed=0):
    """JAX: one shuffled Adam epoch in one jax.jit: a permutation, then per batch the row gather from
    example-major data (m, n0) (its best layout: a column gather from the course's (n0, m) made the epoch
    1.4-1.6x slower here, mnist batch 256), jax.grad and Adam (bias-corrected, as fastdnn's); the last
    batch smaller when m does not divide."""
    jax, jnp = _jax()
    m, B = config.m, config.batch_size
    full, rest = divmod(m, B)
    cost = _jax_cost(config)
    tree = jax.tree_util.tree_map

    def batch_step(state, idx, X, Y):
        params, v, s, t = state
        d = jax.grad(cost)(params, jnp.take(X, idx, axis=0).T, jnp.take(Y, idx, axis=0).T)
        t = t + 1
        v = tree(lambda v, g: beta1 * v + (1 - beta1) * g, v, d)
        s = tree(lambda s, g: beta2 * s + (1 - beta2) * g * g, s, d)
        c1, c2 = 1 / (1 - beta1 ** t), 1 / (1 - beta2 ** t)
        params = tree(lambda p, v, s: p - learning_rate * (v * c1) / (jnp.sqrt(s * c2) + epsilon), params, v, s)
        return params, v, s, t

    def epoch(state, key, X, Y):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, m)
        if full:
            state = jax.lax.fori_loop(
                0, full, lambda i, st: batch_step(st, jax.lax.dynamic_slice(order, (i * B,), (B,)), X, Y), state)
        if rest:
            state = batch_step(state, order[full * B:], X, Y)
        return state, key

    run_epoch = jax.jit(epoch, donate_argnums=(0, 1))
    X, Y = (jnp.asarray(np.ascontiguousarray(a.T)) for a in problem(config, dtype))   # example-major
    params = _jax_start(config, dtype)
    zeros = tree(jnp.zeros_like, params)
    state = [(params, zeros, tree(jnp.zeros_like, params), jnp.zeros((), dtype)), jax.random.PRNGKey(seed)]

    def run():
        state[0], state[1] = run_epoch(state[0], state[1], X, Y)
        jax.block_until_ready(state[0])
    return Candidate("JAX epoch in one jit (gather + Adam)", "reference", "jax", run, f"jax {jax.__version__}",
                     steps=-(-m // B), params=lambda: _jax_params(state[0][0]),
                     steps_done=lambda: int(state[0][3]))


# --- the mini-batch section -------------------------------------------------------------------------
def network_epoch(config, dtype, backend, learning_rate=1e-3, example_major=False):
    """fastdnn through its public API: one ``net.fit(epochs=1, batch_size=B, optimizer="adam")`` call
    is one shuffled epoch (the network keeps its parameters and Adam state between calls). X is in the
    course's layout, (n0, m) C-ordered, which each call copies to one example per row; with
    ``example_major``, X = data.T for example-major data (m, n0) — what the course's own loading code,
    ``X = data.reshape(m, -1).T``, and a PyTorch-style dataset give — which needs no copy."""
    from . import Network
    X, Y = problem(config, dtype)
    X = np.asfortranarray(X) if example_major else X
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    run = lambda: net.fit(X, Y, epochs=1, batch_size=config.batch_size, optimizer="adam",
                          learning_rate=learning_rate, verbose=0)
    name = f"fastdnn {net.backend.name} fit epoch" + (", X = data.T" if example_major else "")
    return Candidate(name, "epoch", "numpy", run, net.backend.name,
                     net.device, net=net, steps=-(-config.m // config.batch_size),
                     params=lambda: _host_params(net), steps_done=lambda: net.iteration)


def network_batch_step(config, dtype, backend, learning_rate=1e-3):
    """The full-batch step the epoch is measured against: ``engine.train_step`` with Adam on B
    examples prepared once (no shuffle, no gather, no Python per step beyond the call)."""
    from . import Network
    X, Y = problem(config._replace(m=config.batch_size, batch_size=None), dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    net.step(X, Y, learning_rate=learning_rate, optimizer="adam")          # makes Adam the optimizer
    Xd, Yd = net.prepare(X, Y)
    engine, sync = net.engine, net.backend.synchronize

    def run():
        engine.train_step(Xd, Yd, learning_rate, check=True)
        sync()
    return Candidate(f"fastdnn {net.backend.name} full-batch step (B examples)", "batch step", "numpy", run,
                     net.backend.name, net.device, net=net, steps_done=lambda: net.iteration)


def torch_adam_epoch(config, dtype, learning_rate=1e-3, seed=0):
    """PyTorch without a DataLoader: torch.randperm, index the batch rows, autograd, torch.optim.Adam."""
    import torch
    model, X, Y, criterion = _torch_model(config, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-8)
    generator = torch.Generator().manual_seed(seed)
    m, B = config.m, config.batch_size

    def run():
        order = torch.randperm(m, generator=generator)
        for i in range(0, m, B):
            idx = order[i:i + B]
            optimizer.zero_grad(set_to_none=False)
            criterion(model(X[idx]), Y[idx]).backward()
            optimizer.step()
    first = next(model.parameters())
    steps_done = lambda: int(optimizer.state[first]["step"]) if first in optimizer.state else 0
    return Candidate("PyTorch epoch (randperm + Adam)", "epoch", "torch", run, f"torch {torch.__version__}",
                     steps=-(-m // B), params=lambda: _torch_params(model), steps_done=steps_done)


def sklearn_adam_epoch(config, dtype, learning_rate=1e-3, seed=0):
    """scikit-learn: MLPClassifier(solver="adam", alpha=0).partial_fit, one shuffled epoch per call.
    Not identical work: its own initialization, float64 loss bookkeeping, and a softmax output even
    for 2 classes only when nL > 1 (a single logistic unit here, as ours)."""
    import sklearn
    from sklearn.neural_network import MLPClassifier
    X, Y = problem(config, dtype)
    C = config.layer_dims[-1]
    y = Y.argmax(axis=0) if config.output == "softmax" else Y[0].astype(int)
    classes = np.arange(C) if config.output == "softmax" else np.array([0, 1])
    clf = MLPClassifier(hidden_layer_sizes=tuple(config.layer_dims[1:-1]), activation=config.hidden,
                        solver="adam", alpha=0.0, batch_size=min(config.batch_size, config.m), learning_rate_init=learning_rate,
                        beta_1=0.9, beta_2=0.999, epsilon=1e-8, shuffle=True, random_state=seed)
    Xs = np.ascontiguousarray(X.T)
    run = lambda: clf.partial_fit(Xs, y, classes=classes)
    steps_done = lambda: int(clf._optimizer.t) if hasattr(clf, "_optimizer") else 0
    return Candidate("scikit-learn MLPClassifier epoch (Adam)", "epoch", "numpy", run,
                     f"scikit-learn {sklearn.__version__}", steps=-(-config.m // config.batch_size),
                     steps_done=steps_done,
                     note="not identical work: its own initialization and loss bookkeeping (alpha=0: no L2)")


def minibatch_candidates(config, dtype, backends=None, others=True):
    """The full-batch step of B examples (the reference), then one shuffled Adam epoch per
    implementation that can run here."""
    from .backends import available_backends
    names = backends or [b.name for b in available_backends() if b.available]
    reference = "numba" if "numba" in names else names[0]
    found = [network_batch_step(config, dtype, reference)]
    found += [network_epoch(config, dtype, name) for name in names]
    found.append(network_epoch(config, dtype, reference, example_major=True))
    for make in (torch_adam_epoch, jax_adam_epoch, sklearn_adam_epoch) if others else ():
        try:
            found.append(make(config, dtype))
        except ImportError:
            pass
    return found


def candidates(config, dtype, loop_budget_s=0.05, backends=None, others=True):
    """Every implementation that can run here, for one configuration and dtype."""
    from .backends import available_backends
    found = [gemm_floor(config, dtype)]
    names = backends or [b.name for b in available_backends() if b.available]
    found += [network_step(config, dtype, name) for name in names]
    if "numba" in names:
        found.append(network_step(config, dtype, "numba", update=False))
        found.append(network_fit_loop(config, dtype, "numba"))
    found.append(per_example_loop(config, dtype, loop_budget_s))
    if sum(a * b for a, b in zip(config.layer_dims, config.layer_dims[1:])) <= 1000:
        found.append(scalar_loop(config, dtype, loop_budget_s, compiled=False))   # small sizes only
    if "numba" in names:
        found.append(scalar_loop(config, dtype, loop_budget_s, compiled=True))
    for makers in ((torch_autograd, torch_by_hand), (jax_step, jax_loop)) if others else ():
        try:
            found += [make(config, dtype) for make in makers]
        except ImportError:
            pass
    return found


def activation_candidates(config, dtype, backends=None, others=True):
    """The network of ``config`` with each of HIDDEN_ACTIVATIONS: fastdnn's fit loop (numba where
    available) and JAX's loop in one jit (relu, tanh and sigmoid, where installed); ``hidden`` names each."""
    from .backends import available_backends
    names = backends or [b.name for b in available_backends() if b.available]
    backend = "numba" if "numba" in names else names[0]
    found = []
    for hidden in HIDDEN_ACTIVATIONS:
        found.append(network_fit_loop(config._replace(hidden=hidden), dtype, backend))
        found[-1].hidden = hidden
    for hidden in ("relu", "tanh", "sigmoid") if others else ():
        try:
            found.append(jax_loop(config._replace(hidden=hidden), dtype))
        except ImportError:
            break
        found[-1].hidden = hidden
    return found


def summarize_activations(config, dtype, found):
    """Rows of the hidden-activation section: time per step and the ratio to the same implementation
    with a ReLU hidden activation."""
    rows = []
    for c in found:
        relu = next(r for r in found if r.hidden == "relu" and r.family == c.family)
        t = np.array(c.times)
        rows.append(dict(
            section="activations", config=config.name, layer_dims=config.layer_dims, m=config.m, dtype=dtype,
            hidden=c.hidden, implementation=c.name, backend=c.backend, device=c.device, steps_per_call=c.steps,
            median_s=float(np.median(t)), p25_s=float(np.percentile(t, 25)), p75_s=float(np.percentile(t, 75)),
            rounds=len(t), vs_relu=ratio(c, relu)))
    return rows


def peak_gemm(dtype, n=2048):
    """This machine's GEMM rate as a candidate timed in every round beside a table's others: one (n, n)·(n, n)
    product through NumPy's BLAS (sgemm / dgemm). Its times are seconds per FLOP (``scale`` 1 / 2n³), so
    1 / time is a round's rate, and a step's FLOPs times it that round's physical limit."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n)).astype(dtype) for _ in range(2))
    c = np.empty_like(a)
    return Candidate(f"peak GEMM (n = {n})", "peak", "numpy", lambda: np.matmul(a, b, out=c), scale=1 / (2 * n ** 3))


def _physical(config, peak):
    """(limit_s, GFLOP/s, c -> vs_limit) from the peak GEMM candidate timed in the same rounds as ``config``'s
    (None, None, c -> None without one): the limit at the table's median rate, and each ratio the median over
    rounds of the step's time over that round's limit (a load that slows the machine moves both)."""
    if peak is None:
        return None, None, lambda c: None
    flops, per_flop = physical_limit_s(config, 1.0), float(np.median(peak.times))
    return flops * per_flop, 1e-9 / per_flop, lambda c: ratio(c, peak) / flops


def physical_limit_s(config, rate):
    """The step's FLOPs (flops_per_step, at the batch size for a mini-batch configuration) at ``rate``."""
    if config.batch_size:
        config = config._replace(m=config.batch_size)
    return flops_per_step(config) / rate


# --- the runner -------------------------------------------------------------------------------
def measure(found, rounds, min_block_s=0.02, max_calls=1000):
    """Time every candidate interleaved for ``rounds`` rounds; fills Candidate.times (s per step)."""
    for c in found:                                  # warm up: JIT, BLAS threads, caches
        start = time.perf_counter()
        c.run()
        if time.perf_counter() - start < 0.1:        # a second warm-up unless one call is long
            c.run()
    engine.wait_for_compiles()                       # never time steps run while a kernel compiles
    calls = {}
    for c in found:
        start = time.perf_counter()
        c.run()
        one = max(time.perf_counter() - start, 1e-7)
        calls[c.name] = int(max(1, min(max_calls, min_block_s / one)))
    order = sorted(found, key=lambda c: (c.family != "numpy", c.family))
    for r in range(rounds):
        family = None
        for c in _rotated(order, r):
            if family is not None and c.family != family:
                time.sleep(SETTLE_S)
            family = c.family
            n = calls[c.name]
            start = time.perf_counter()
            for _ in range(n):
                c.run()
            c.times.append((time.perf_counter() - start) / n * c.scale / c.steps)
        time.sleep(SETTLE_S if family != "numpy" else 0)
    return found


def _rotated(order, r):
    """``order`` with each family's candidates rotated by r places: the first candidate after a switch of
    library (or a sleep) runs on colder caches and threads, so no candidate takes that place every round."""
    out = []
    for family in dict.fromkeys(c.family for c in order):
        group = [c for c in order if c.family == family]
        k = r % len(group)
        out += group[k:] + group[:k]
    return out


def ratio(a, b):
    """How many times slower a is than b: the median over rounds of a's time / b's time."""
    return float(np.median(np.array(a.times) / np.array(b.times)))


def summarize(config, dtype, found, peak=None):
    """Rows: median time per step, spread, ratio to the floor and to PyTorch, speed-up over loops, and
    (given the ``peak`` GEMM candidate timed in the same rounds) the physical limit and the ratio to it."""
    floor = next(c for c in found if c.kind == "floor")
    torch_ref = next((c for c in found if c.name.startswith("PyTorch autograd")), None)
    loop = next((c for c in found if c.name.startswith("loop over examples")), None)
    limit, gflops, vs_limit = _physical(config, peak)
    rows = []
    for c in found:
        t = np.array(c.times)
        rows.append(dict(
            section="step", config=config.name, layer_dims=config.layer_dims, m=config.m, dtype=dtype,
            implementation=c.name, kind=c.kind, backend=c.backend, device=c.device,
            median_s=float(np.median(t)), p25_s=float(np.percentile(t, 25)),
            p75_s=float(np.percentile(t, 75)), rounds=len(t), extrapolated=c.scale != 1.0,
            steps_per_call=c.steps, vs_floor=ratio(c, floor), vs_torch=ratio(c, torch_ref) if torch_ref else None,
            speedup_over_loop=ratio(loop, c) if loop else None,
            limit_s=limit, machine_gflops=gflops, vs_limit=vs_limit(c), note=c.note))
    return rows


def summarize_minibatch(config, dtype, found, peak=None):
    """Rows of the mini-batch section: time per step (epoch time / batches), the epoch, and the
    ratio to the full-batch step of the same batch size and to the physical limit (see ``summarize``)."""
    reference = next(c for c in found if c.kind == "batch step")
    limit, gflops, vs_limit = _physical(config, peak)
    rows = []
    for c in found:
        t = np.array(c.times)
        rows.append(dict(
            section="minibatch", config=config.name, layer_dims=config.layer_dims, m=config.m,
            batch_size=config.batch_size, dtype=dtype, implementation=c.name, kind=c.kind,
            backend=c.backend, device=c.device, steps_per_epoch=c.steps if c.kind != "batch step" else None,
            median_s=float(np.median(t)), p25_s=float(np.percentile(t, 25)), p75_s=float(np.percentile(t, 75)),
            epoch_s=float(np.median(t)) * c.steps if c.kind != "batch step" else None, rounds=len(t),
            vs_batch_step=ratio(c, reference), limit_s=limit, machine_gflops=gflops, vs_limit=vs_limit(c),
            identical_work=not c.note, note=c.note))
    return rows


def machine_info():
    """CPU, cores, BLAS and its threads, library versions, relevant environment variables."""
    info = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), python=sys.version.split()[0],
                platform=platform.platform(), cpu=_cpu_name(), cores=os.cpu_count(),
                numpy=np.__version__)
    for module in ("numba", "torch", "cupy", "jax", "sklearn"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads",
                                                        "version", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_"))}
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(configs=CONFIGS, dtypes=("float32", "float64"), rounds=7, loop_budget_s=0.05, progress=True,
        minibatch="auto", gemm_n=2048, backends=None, others=True, activations="auto"):
    """Measure every configuration x dtype, then the mini-batch section (``minibatch``: a list of
    MINIBATCH_CONFIGS entries, or "auto": when ``configs`` is every step configuration, all of them
    with more than 3 rounds (``--full``), the moons one only with 3 or fewer (``--quick`` stays
    under a minute: an mnist epoch is ~0.1-0.3 s and each candidate runs 5+ of them); none when
    ``configs`` is a selection), then the hidden-activation section (``activations``: ACTIVATION_CONFIGS
    entries, or "auto": all with ``--full``, the first with ``--quick``, none for a selection). Each table's
    rounds also time ``peak_gemm``: the physical limits and ratios to them move with the machine's speed, and
    each row records that speed (``machine_gflops``, the table's median; ``machine_share``, over the best
    table's of its dtype: another load on the machine shows as a lower share). ``backends``: fastdnn's
    (default: every available one); ``others``: PyTorch, JAX and scikit-learn rows where installed.
    Returns (rows, info)."""
    every = {c.name for c in configs} >= {c.name for c in CONFIGS}
    if minibatch == "auto":
        minibatch = [] if not every else MINIBATCH_CONFIGS if rounds > 3 else \
            [c for c in MINIBATCH_CONFIGS if c.name == "moons-b64"]
    if activations == "auto":
        activations = [] if not every else ACTIVATION_CONFIGS if rounds > 3 else ACTIVATION_CONFIGS[:1]
    jobs = [(c, d, s) for s, group in (("step", configs), ("minibatch", minibatch), ("activations", activations))
            for c in group for d in dtypes]
    bar = _progress(len(jobs), progress)
    rows = []
    for config, dtype, section in jobs:
        bar.set_description(f"{config.name} {dtype}")
        peak = peak_gemm(dtype, gemm_n)
        if section == "activations":
            found = measure(activation_candidates(config, dtype, backends, others) + [peak], rounds)[:-1]
            new = summarize_activations(config, dtype, found)
        elif config.batch_size:
            found = measure(minibatch_candidates(config, dtype, backends, others) + [peak], rounds)[:-1]
            new = summarize_minibatch(config, dtype, found, peak)
        else:
            found = measure(candidates(config, dtype, loop_budget_s, backends, others) + [peak], rounds)[:-1]
            new = summarize(config, dtype, found, peak)
        rows += [dict(r, machine_gflops=1e-9 / float(np.median(peak.times))) for r in new]
        bar.update(1)
    bar.close()
    best = {d: max(r["machine_gflops"] for r in rows if r["dtype"] == d) for d in dtypes if rows}
    for r in rows:
        r["machine_share"] = r["machine_gflops"] / best[r["dtype"]]
    info = machine_info()
    info["peak_gemm"] = {d: dict(n=gemm_n, gflops=g) for d, g in best.items()}
    return rows, info


def _slow_shares(rows):
    """((section, config, dtype), its rate / the best rate) for each table timed while the machine's peak GEMM
    rate read below SLOW_MACHINE of the best measured for its dtype (another load on it), in the rows' order."""
    return list({_table(r): r["machine_share"] for r in rows if r.get("machine_share", 1.0) < SLOW_MACHINE}.items())


def _table(r):
    """(section, config, dtype): the table a row is in."""
    return r.get("section", "step"), r["config"], r["dtype"]


def slow_tables(rows):
    """'config dtype (N%)' for each table timed while the machine ran slower (see ``_slow_shares``), with its
    section where that is not the step one."""
    return [f"{config} {dtype}{'' if section == 'step' else ', ' + section} ({100 * s:.0f}%)"
            for (section, config, dtype), s in _slow_shares(rows)]


def _progress(total, enabled):
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, disable=not enabled, unit="config", file=sys.stderr)
    except ImportError:
        class Plain:
            def __init__(self):
                self.done = 0

            def set_description(self, text):
                if enabled:
                    print(f"[{self.done + 1}/{total}] {text} ...", file=sys.stderr, flush=True)

            def update(self, n):
                self.done += n

            def close(self):
                pass
        return Plain()


# --- reports ----------------------------------------------------------------------------------
def _fmt_time(s):
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_ratio(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}x" if x < 100 else f"{x:,.0f}x"


def markdown_table(header, rows):
    """A Markdown table: a header row of column names, then one row of cells per entry."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def table(rows):
    """Markdown tables, one per configuration and dtype: the step section, the mini-batch one, then the hidden
    activations."""
    out, slow = [], dict(_slow_shares(rows))
    flag = functools.partial(_slow_text, slow)
    for group in _groups(rows, "step"):
        r0 = group[0]
        out.append(f"\n**{r0['config']}**: {r0['layer_dims']}, m = {r0['m']}, {r0['dtype']}"
                   f"{_limit_text(r0)}{flag(r0)}\n")
        out.append(markdown_table(
            ["implementation", "backend / device", "time per step (IQR)", "vs loop", "vs GEMM floor",
             "vs physical limit", "vs PyTorch"],
            [[r["implementation"], f"{r['backend']} / {r['device']}",
              _time_iqr(r, " (extrapolated)" if r["extrapolated"] else ""), _fmt_ratio(r["speedup_over_loop"], 1),
              _fmt_ratio(r["vs_floor"]), _fmt_ratio(r.get("vs_limit")), _fmt_ratio(r["vs_torch"])]
             for r in sorted(group, key=lambda r: r["median_s"])]))
    for i, group in enumerate(_groups(rows, "minibatch")):
        r0 = group[0]
        if i == 0:
            out.append("\n### Mini-batch: one shuffled Adam epoch, per step\n")
        out.append(f"\n**{r0['config']}**: {r0['layer_dims']}, m = {r0['m']}, batch {r0['batch_size']}, "
                   f"{r0['dtype']}{_limit_text(r0)}{flag(r0)}\n")
        out.append(markdown_table(
            ["implementation", "backend / device", "steps", "time per step (IQR)", "epoch", "vs full-batch step",
             "vs physical limit"],
            [[r["implementation"] + ("" if r["identical_work"] else " *"), f"{r['backend']} / {r['device']}",
              r["steps_per_epoch"] or 1, _time_iqr(r), _fmt_time(r["epoch_s"]) if r["epoch_s"] else "—",
              _fmt_ratio(r["vs_batch_step"]), _fmt_ratio(r["vs_limit"])]
             for r in sorted(group, key=lambda r: r["median_s"])]))
        out += [f"\n\\* {n}" for n in dict.fromkeys(r["note"] for r in group if r["note"])]
    for i, group in enumerate(_groups(rows, "activations")):
        r0 = group[0]
        if i == 0:
            out.append("\n### Hidden activations: the same network with each, per step inside fit\n")
        out.append(f"\n**{r0['config']}**: {r0['layer_dims']}, m = {r0['m']}, {r0['dtype']}{flag(r0)}\n")
        out.append(markdown_table(["implementation", "hidden activation", "time per step (IQR)", "vs its relu"],
                                  [[r["implementation"], r["hidden"], _time_iqr(r), _fmt_ratio(r["vs_relu"])]
                                   for r in group]))
    return "\n".join(out)


def _slow_text(slow, r):
    """' — timed while the machine ran at N% of its best GEMM rate' for a table in ``slow``, else ''."""
    share = slow.get(_table(r))
    return f" — timed while the machine ran at {100 * share:.0f}% of its best GEMM rate" if share else ""


def _groups(rows, section):
    """The rows of one section (``section`` key, "step" where absent), grouped by (config, dtype) in order."""
    mine = [r for r in rows if r.get("section", "step") == section]
    for key in dict.fromkeys(_table(r) for r in mine):
        yield [r for r in mine if _table(r) == key]


def _time_iqr(r, extra=""):
    """'median (p25–p75)' of a row's per-step time."""
    return f"{_fmt_time(r['median_s'])}{extra} ({_fmt_time(r['p25_s'])}–{_fmt_time(r['p75_s'])})"


def _limit_text(r):
    if not r.get("limit_s"):
        return ""
    return f"; physical limit {_fmt_time(r['limit_s'])} per step (its FLOPs at {r['machine_gflops']:.0f} GFLOP/s)"


def write_reports(rows, info, directory, command):
    """results.json, RESULTS.md and results.png (if matplotlib is installed) in directory."""
    os.makedirs(directory, exist_ok=True)
    paths = {"json": os.path.join(directory, "results.json"), "md": os.path.join(directory, "RESULTS.md"),
             "png": os.path.join(directory, "results.png")}
    _atomic_write(paths["json"], json.dumps(dict(command=command, machine=info, rows=rows), indent=1))
    threads = "; ".join(dict.fromkeys(
        f"{p['internal_api']}" + (f" ({p['architecture']} kernels)" if p.get("architecture") else "")
        + f" {p['num_threads']} threads" for p in info["threadpools"])) \
        if isinstance(info["threadpools"], list) else info["threadpools"]
    slow = slow_tables(rows)
    header = (f"# fastdnn benchmark results\n\nMeasured {info['date']} on {info['cpu']} "
              f"({info['cores']} cores; {threads}), Python {info['python']}, NumPy {info['numpy']}, "
              f"Numba {info['numba']}, PyTorch {info['torch']}, JAX {info.get('jax')}, "
              f"scikit-learn {info.get('sklearn')}.\n"
              f"Environment: {info['env'] or 'no BLAS/OpenMP/Numba variables set'}.\n\n"
              f"Reproduce with:\n\n```sh\n{command}\n```\n\n"
              "Each time is the median over interleaved rounds (IQR in brackets); ratios are medians "
              "of per-round ratios. 'vs loop' is the speed-up over the Python loop over examples; "
              "'vs GEMM floor' is the step time over the time of its GEMMs alone; "
              "'vs physical limit' is the step time over the step's FLOPs at this machine's peak GEMM rate, "
              "timed in every round beside the step (the best table's median: "
              f"{_peak_text(info)}; each table gives its own): the median over rounds of the step's time over "
              "that round's limit, so a load that slows the machine moves both; "
              "'vs PyTorch' is over PyTorch autograd + SGD. Loop times marked extrapolated were "
              "measured on a subset of the examples and scaled to m. JAX loop rows run several steps "
              "in one jit call and report the time per step. The mini-batch section times one shuffled "
              "Adam epoch per call and reports epoch time / batches; 'vs full-batch step' is over "
              "fastdnn's fused step (engine.train_step, Adam) on B examples. 'fit loop' rows time "
              "fit(X, Y, iterations=k) per step (its compiled loop, with fit's per-call work spread over k); "
              "the hidden-activation section compares each activation with the same implementation's ReLU. "
              "A table timed while the GEMM rate read below "
              f"{100 * SLOW_MACHINE:.0f}% of the best table's (another load on the machine) says so in its title"
              + (f"; here: {', '.join(slow)}" if slow else "; none was") + ".\n")
    _atomic_write(paths["md"], header + table(rows) + "\n\n![chart](results.png)\n")
    if not chart(rows, paths["png"]):
        paths.pop("png")
    return paths


def _peak_text(info):
    peak = info.get("peak_gemm") or {}
    return ", ".join(f"{d} {p['gflops']:.0f} GFLOP/s at n = {p['n']}" for d, p in peak.items()) or "not measured"


def chart(rows, path):
    """Two log-scale panels: speed-up over the Python loop, and ratio to the GEMM floor."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in rows if r.get("section", "step") == "step"]
    keys = list(dict.fromkeys((r["config"], r["dtype"]) for r in rows))
    impls = [i for i in dict.fromkeys(r["implementation"] for r in rows)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(keys)), 9))
    width = 0.8 / max(1, len(impls))
    for panel, (field_, title) in zip(axes, [("speedup_over_loop", "speed-up over the Python loop over examples"),
                                             ("vs_floor", "time per step / GEMM floor")]):
        for i, impl in enumerate(impls):
            values = [next((r[field_] for r in rows if (r["config"], r["dtype"]) == k
                            and r["implementation"] == impl), None) for k in keys]
            xs = [j + i * width for j, v in enumerate(values) if v]
            panel.bar(xs, [v for v in values if v], width, label=impl)
        panel.set_yscale("log")
        panel.set_title(title)
        panel.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        panel.set_xticklabels([f"{c}\n{d}" for c, d in keys], fontsize=8)
        panel.grid(axis="y", which="both", alpha=0.3)
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _atomic_write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
