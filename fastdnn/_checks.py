"""Input checks with messages that name the layer, the array and both shapes (explicit raises)."""
import numpy as np

from .errors import ShapeError


def number(name, value):
    """value as a float, or TypeError naming the argument (a number is expected, not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    return float(value)


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
    """NaN or ±inf anywhere in x -> ValueError naming the first; no x-sized temporary. On the host one
    pass: a finite sum proves every entry finite (∞ and NaN stick); one that is not (or overflowed) is
    settled by NaN-propagating min and max. ``source``: the data before the cast to x's dtype, to tell
    an overflow apart."""
    if x.size == 0:
        return
    if backend.xp is np:                     # host: reductions to a scalar, no stack (a small fit's call is µs)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(x.sum())
        if finite or (np.isfinite(x.min()) and np.isfinite(x.max())):
            return
    elif np.isfinite(backend.to_numpy(backend.xp.stack([x.min(), x.max()]))).all():
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
    integer class ids (m,) / (1, m) for ce (converted to one-hot), any finite value for mse.
    Checked where Y lives: a device Y is summarized on the device and only the summary (a few
    numbers, one read) comes to the host."""
    if type(Y).__module__.split(".")[0] == "cupy" and backend.xp is np:
        as_float_array(backend, Y, "Y", dtype)           # raises with the remedy
    if not hasattr(Y, "dtype"):
        Y = np.asarray(Y)
    if np.dtype(Y.dtype).kind not in "biuf":
        raise TypeError(f"Y must hold numbers; got dtype {Y.dtype}")
    xp, Yd, expected = backend.xp, backend.asarray(Y), (n_L, m)
    ids = loss.name == "ce" and Yd.size == m and Yd.shape in ((m,), (1, m)) and n_L != 1
    if Yd.ndim == 1 and (n_L == 1 or ids):
        Yd = Yd.reshape(1, -1)
    lo, hi, whole, not_binary, off_one = _label_summary(backend, Yd, loss, ids, Yd.shape == expected)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("Y contains NaN or infinity")
    if ids:
        if not (whole and lo >= 0 and hi < n_L):
            raise ValueError(f"class ids in Y must be integers in [0, {n_L}); got values from {lo:g} to {hi:g}")
        return (xp.arange(n_L).reshape(n_L, 1) == Yd).astype(dtype)      # one-hot, on the backend
    if Yd.shape != expected:
        raise ShapeError(f"{layer_name(L, L, activation)}: Y has shape {tuple(Yd.shape)}, expected "
                         f"{expected} to match A{L} {expected}")
    if not_binary:
        Yh = backend.to_numpy(Yd)
        raise ValueError(f"labels for loss 'bce' must be 0 or 1; Y contains {Yh[~np.isin(Yh, (0, 1))][0]}")
    if loss.name == "ce" and (lo < 0 or hi > 1):
        raise ValueError("Y for loss 'ce' must be one-hot (or probabilities) of shape "
                         f"({n_L}, m), or integer class ids of shape (m,) or (1, m)")
    if off_one > 1e-8 + 1e-5:                            # np.allclose(column sums, 1)
        sums = backend.to_numpy(Yd).sum(axis=0)
        j = int(np.argmax(~np.isclose(sums, 1)))
        raise ValueError(f"Y for loss 'ce' must have columns summing to 1 (one-hot or probabilities); "
                         f"column {j} sums to {sums[j]:g}")
    return as_float_array(backend, Yd, "Y", dtype)


def _label_summary(backend, Y, loss, ids, shaped):
    """(min, max, all whole numbers, any not in {0, 1}, max |column sum - 1|) of Y as host floats,
    from one device-to-host read: NaN-propagating min and max, the rest only where the loss needs it."""
    xp = backend.xp
    if Y.size == 0:
        return 0.0, 0.0, True, False, 0.0
    if xp is np and loss.name == "bce" and not np.count_nonzero((Y != 0) & (Y != 1)):
        return 0.0, 1.0, True, False, 0.0                    # all 0 or 1 (NaN is neither): nothing else to know
    zero = 0.0 if xp is np else xp.zeros((), np.float64)     # on the host: plain numbers, nothing stacked
    parts = [Y.min(), Y.max(),
             xp.all(Y == xp.round(Y)) if ids else zero + 1,
             xp.count_nonzero((Y != 0) & (Y != 1)) if loss.name == "bce" else zero,
             xp.max(xp.abs(Y.sum(axis=0, dtype=np.float64) - 1)) if loss.name == "ce" and shaped and not ids
             else zero]
    if xp is not np:
        parts = backend.to_numpy(xp.stack([xp.asarray(p, np.float64) for p in parts]))
    lo, hi, whole, not_binary, off_one = (float(p) for p in parts)
    return lo, hi, bool(whole), bool(not_binary), off_one


def parameter_shapes(parameters, activations=None):
    """layer_dims [n0, ..., nL] from W1..WL, checking every W[l] and b[l] against its neighbours."""
    L = 0
    while f"W{L + 1}" in parameters:
        L += 1
    if L == 0:
        raise ValueError("parameters must hold W1, b1, ..., WL, bL; found no 'W1'")
    extra = set(parameters) - {f"{p}{l}" for l in range(1, L + 1) for p in "Wb"}
    later = [k for k in extra if k[:1] in "Wb" and k[1:].isdigit() and int(k[1:]) > L]
    if later:
        raise ValueError(f"parameters have {', '.join(sorted(later))} but no W{L + 1}")
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
