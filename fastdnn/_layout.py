"""Where things live in the flat buffers: parameters laid out W1, b1, W2, b2, ..., and the workspace's
Z / A / dA buffers laid out layer after layer."""
import numpy as np


def flat_layout(layer_dims):
    """(dims, pofs): int64 layer sizes and the offset of each layer's W in the flat θ (b[l] follows W[l])."""
    dims = np.asarray(layer_dims, dtype=np.int64)
    pofs = np.concatenate([[0], np.cumsum(dims[1:] * dims[:-1] + dims[1:])]).astype(np.int64)
    return dims, pofs


def workspace_offsets(layer_dims, m):
    """int64 offsets of layer l's (n_l, m) block in a flat workspace buffer; the last is the total size."""
    return np.concatenate([[0], np.cumsum(np.asarray(layer_dims[1:], dtype=np.int64) * m)]).astype(np.int64)


# --- skip (residual) connections ----------------------------------------------------------------------
PROJECTIONS = ("learned", "pad")


def skip_pairs(skip, layer_dims):
    """The skip connections a[l] -> z[k] of a network [n0, ..., nL] as a sorted list of (l, k).

    ``skip``: None/False/0/[] (none); an int s >= 2: a residual block every s hidden layers, a[l] -> z[l+s]
    for l = 1, 1+s, 1+2s, ... while l + s <= L - 1 (between hidden layers: X does not start a block and the
    output layer ends none, as in the course's blocks); or explicit pairs [(l, k), ...] with 0 <= l,
    l + 2 <= k <= L, at most one connection into each layer k. ValueError/TypeError naming the pair."""
    L = len(layer_dims) - 1
    if skip is None or skip is False or (isinstance(skip, (list, tuple)) and not skip):
        return []
    if isinstance(skip, (int, np.integer)) and not isinstance(skip, (bool, np.bool_)):
        s = int(skip)
        if s == 0:
            return []
        if s < 2:
            raise ValueError(f"skip={s}: a residual block spans at least 2 layers (skip=2: a[l] -> z[l+2])")
        pairs = [(l, l + s) for l in range(1, L, s) if l + s <= L - 1]
        if not pairs:
            raise ValueError(f"skip={s} needs at least {s + 1} hidden layers (a[1] -> z[{1 + s}] between hidden "
                             f"layers); layer_dims {list(layer_dims)} has {L - 1}")
        return pairs
    if not isinstance(skip, (list, tuple)):
        raise TypeError(f"skip must be an int (a block every that many hidden layers) or a list of pairs "
                        f"(l, k); got {type(skip).__name__}")
    seen, into = set(), {}
    for pair in skip:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in pair)):
            raise TypeError(f"skip connection {pair!r} must be a pair of integers (l, k): a[l] -> z[k]")
        l, k = int(pair[0]), int(pair[1])
        if l < 0 or k > L:
            raise ValueError(f"skip connection ({l}, {k}) is out of range: need 0 <= l and k <= L = {L}")
        if k < l + 2:
            raise ValueError(f"skip connection ({l}, {k}): k must be at least l + 2 (a[l] already feeds z[l+1])")
        if (l, k) in seen:
            raise ValueError(f"skip connection ({l}, {k}) is given twice")
        if k in into:
            raise ValueError(f"skip connections ({into[k]}, {k}) and ({l}, {k}) both go into layer {k}; "
                             "at most one connection may end in each layer")
        seen.add((l, k))
        into[k] = l
    return sorted(seen, key=lambda p: (p[1], p[0]))


def check_projection(projection):
    """'learned' or 'pad', else ValueError listing the choices."""
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; expected one of 'learned', 'pad'")
    return projection


def skip_layout(layer_dims, skips, projection):
    """[(l, k, offset)]: for each skip (l, k), the offset in the flat θ of its learned Ws (n_k, n_l), or -1
    when it has none (equal widths: the identity; projection 'pad': fixed). The Ws follow every layer's
    W, b, in the order of ``skips``; returns (that list, P = the size of θ)."""
    dims, pofs = flat_layout(layer_dims)
    P, out = int(pofs[-1]), []
    for l, k in skips:
        if projection == "learned" and dims[l] != dims[k]:
            out.append((l, k, P))
            P += int(dims[k] * dims[l])
        else:
            out.append((l, k, -1))
    return out, P


def skip_name(l, k):
    """The name of a skip's learned projection in ``parameters``: 'Ws1_3' for a[1] -> z[3] (its gradient:
    'dWs1_3')."""
    return f"Ws{l}_{k}"


# --- batch normalization ---------------------------------------------------------------------------------
BN_EPSILON = 1e-5       # ε in Z̃ = γ·(Z − μ)/√(σ² + ε) + β
BN_MOMENTUM = 0.9       # running μ, σ² ← 0.9·running + 0.1·the batch's (the course's exponentially weighted average)


def batch_norm_layers(batch_norm, layer_dims):
    """The hidden layers l (1 <= l <= L - 1) that batch normalization applies to, sorted: ``batch_norm``
    True (every hidden layer), False/None (none), or one bool per hidden layer. ValueError/TypeError."""
    L = len(layer_dims) - 1
    if batch_norm is None or batch_norm is False:
        return []
    if batch_norm is True:
        return list(range(1, L))
    if isinstance(batch_norm, (str, bytes)) or not hasattr(batch_norm, "__len__"):
        raise TypeError(f"batch_norm must be True, False or one bool per hidden layer; got {batch_norm!r}")
    flags = list(batch_norm)
    if len(flags) != L - 1 or not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError(f"batch_norm must be True, False or {L - 1} bools (one per hidden layer of "
                         f"{list(layer_dims)}); got {batch_norm!r}")
    return [l for l, f in enumerate(flags, start=1) if f]


def batch_norm_names(l):
    """The names of layer l's batch-norm arrays: γ (learned), then the running μ and σ² (not learned); β,
    learned, takes b's place in θ and is named 'beta{l}'."""
    return f"gamma{l}", f"running_mean{l}", f"running_var{l}"


def batch_norm_layout(layer_dims, layers, P):
    """{l: (offset of γ[l], of the running μ[l], of the running σ²[l])} in the flat θ from offset P on: every
    γ first (learned, with the other parameters), then the running statistics; returns (that, the new P)."""
    dims, out = layer_dims, {}
    for l in layers:
        out[l] = [P]
        P += dims[l]
    for l in layers:
        out[l] += [P, P + dims[l]]
        P += 2 * dims[l]
    return {l: tuple(v) for l, v in out.items()}, P
