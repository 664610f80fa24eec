"""Input checks with messages that name the layer, the array and both shapes (explicit raises)."""
import numpy as np

from .errors import ShapeError


def layer_name(l, L, activation):
    return f"layer {l} of {L} ({activation.name})"


def _host_view(x):
    """A NumPy view of a host array, or None for device arrays (checked on the device)."""
    return x if isinstance(x, np.ndarray) else None


def as_float_array(backend, x, name, dtype):
    """x on the backend in ``dtype``; ints and bools are cast, anything else non-float refused."""
    if type(x).__module__.split(".")[0] == "cupy" and backend.xp is np:
        raise TypeError(f"backend {backend.name!r} got cupy.ndarray for {name}; "
                        f"move it with net.backend.asarray({name})")
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    kind = np.dtype(x.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"{name} must hold numbers; got dtype {x.dtype}")
    x = backend.asarray(x, dtype=dtype)
    if not (x.flags.c_contiguous or x.flags.f_contiguous):   # reversed, broadcast, overlapping, sliced:
        x = backend.xp.ascontiguousarray(x)                  # a layout BLAS cannot take
    return x


def check_finite(backend, x, name, source=None):
    """NaN or ±inf anywhere in x -> ValueError naming the first; NaN-propagating min and max, so no
    x-sized temporary. ``source``: the data before the cast to x's dtype, to tell an overflow apart."""
    if x.size == 0 or (np.isfinite(backend.scalar(x.min())) and np.isfinite(backend.scalar(x.max()))):
        return
    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(backend.to_numpy(x)))[0])
    if source is not None and np.isfinite(source[bad]):
        raise ValueError(f"{name} holds {source[bad]!r} at index {bad}, beyond the range of {x.dtype} "
                         f"(max {np.finfo(x.dtype).max:.4g}): scale the data or use dtype='float64'")
    raise ValueError(f"{name} contains NaN or infinity (first at index {bad})")


def check_X(X, W1_shape, L, activation):
    """X must be (n_x, m) with n_x = W1.shape[1] and m >= 1."""
    n_x = W1_shape[1]
    if X.ndim != 2 or X.shape[0] != n_x:
        raise ShapeError(f"{layer_name(1, L, activation)}: X has shape {tuple(X.shape)}, expected "
                         f"({n_x}, m) to match W1 {tuple(W1_shape)}; X is (features, examples) "
                         "as in the course")
    if X.shape[1] == 0:
        raise ValueError("X has no examples (m = 0); X is (features, examples) as in the course")


def labels(backend, Y, loss, n_L, m, L, activation, dtype):
    """Y as (n_L, m) on the backend, checked for the loss: {0,1} for bce, one-hot (C, m) or
    integer class ids (m,) / (1, m) for ce (converted to one-hot), any finite value for mse."""
    if type(Y).__module__.split(".")[0] == "cupy" and backend.xp is np:
        as_float_array(backend, Y, "Y", dtype)           # raises with the remedy
    Yh = backend.to_numpy(Y) if not isinstance(Y, np.ndarray) else np.asarray(Y)
    if Yh.dtype.kind not in "biuf":
        raise TypeError(f"Y must hold numbers; got dtype {Yh.dtype}")
    if not np.isfinite(Yh).all():
        raise ValueError("Y contains NaN or infinity")
    expected = (n_L, m)
    if loss.name == "ce" and Yh.size == m and Yh.shape in ((m,), (1, m)) and n_L != 1:
        ids = Yh.reshape(-1)
        if not (np.all(ids == np.round(ids)) and ids.min() >= 0 and ids.max() < n_L):
            raise ValueError(f"class ids in Y must be integers in [0, {n_L}); got values from "
                             f"{ids.min()} to {ids.max()}")
        Yh = np.zeros(expected)
        Yh[ids.astype(np.int64), np.arange(m)] = 1
    if Yh.ndim == 1 and n_L == 1:
        Yh = Yh.reshape(1, -1)
    if Yh.shape != expected:
        raise ShapeError(f"{layer_name(L, L, activation)}: Y has shape {tuple(Yh.shape)}, expected "
                         f"{expected} to match A{L} {expected}")
    if loss.name == "bce" and not np.isin(Yh, (0, 1)).all():
        bad = Yh[~np.isin(Yh, (0, 1))][0]
        raise ValueError(f"labels for loss 'bce' must be 0 or 1; Y contains {bad}")
    if loss.name == "ce" and (Yh.min() < 0 or Yh.max() > 1):
        raise ValueError("Y for loss 'ce' must be one-hot (or probabilities) of shape "
                         f"({n_L}, m), or integer class ids of shape (m,) or (1, m)")
    if loss.name == "ce" and not np.allclose(Yh.sum(axis=0), 1):
        j = int(np.argmax(~np.isclose(Yh.sum(axis=0), 1)))
        raise ValueError(f"Y for loss 'ce' must have columns summing to 1 (one-hot or probabilities); "
                         f"column {j} sums to {Yh[:, j].sum():g}")
    return backend.asarray(np.ascontiguousarray(Yh), dtype=dtype)


def parameter_shapes(parameters, activations=None):
    """layer_dims [n0, ..., nL] from W1..WL, checking every W[l] and b[l] against its neighbours."""
    L = 0
    while f"W{L + 1}" in parameters:
        L += 1
    if L == 0:
        raise ValueError("parameters must hold W1, b1, ..., WL, bL; found no 'W1'")
    extra = set(parameters) - {f"{p}{l}" for l in range(1, L + 1) for p in "Wb"}
    if extra:
        raise ValueError(f"unexpected parameter names {sorted(extra)}; expected W1..W{L}, b1..b{L}")
    dims = [np.shape(parameters["W1"])[1] if np.ndim(parameters["W1"]) == 2 else "n0"]
    for l in range(1, L + 1):
        where = f"layer {l} of {L}" + (f" ({activations[l - 1].name})" if activations else "")
        W, b = parameters[f"W{l}"], parameters.get(f"b{l}")
        if b is None:
            raise ValueError(f"{where}: parameters have W{l} but no b{l}")
        if np.ndim(W) != 2 or np.shape(W)[1] != dims[-1]:
            prev = f"W{l - 1} {tuple(np.shape(parameters[f'W{l - 1}']))}" if l > 1 else "itself"
            raise ShapeError(f"{where}: W{l} has shape {tuple(np.shape(W))}, expected "
                             f"(n{l}, {dims[-1]}) to match {prev}")
        n = np.shape(W)[0]
        if tuple(np.shape(b)) not in ((n, 1), (n,)):
            raise ShapeError(f"{where}: b{l} has shape {tuple(np.shape(b))}, expected ({n}, 1) "
                             f"to match W{l} {tuple(np.shape(W))}")
        dims.append(n)
    return dims
