"""Activations g(Z): one registry, each written twice from the same formulas.

* ``forward(xp, Z, out)`` / ``backward(xp, dA, Z, A, out)``: vectorized for an array
  namespace ``xp`` (NumPy or CuPy).
* ``scalar(ftype)``: a pair ``(g(z), g'(z, a))`` of ``math``-only functions for one float
  type, with constants of that type, so Numba can compile them for the CPU (``@njit``) and
  the GPU (``@cuda.jit(device=True)``) without promoting float32 to float64.
  ``g'(z, a)`` gets both Z and A = g(Z) and uses whichever is cheaper.

All forms are stable for |z| up to 1e4 in float32 and float64 (no overflow, no inf/nan).
Softmax is column-wise, so it has no scalar form and is allowed only as the output layer.
Adding an activation is one subclass here plus one registry line.
"""
import math

from .errors import unknown_name


def _into(result, out):
    """result, written into out when given."""
    if out is None:
        return result
    out[...] = result
    return out


class Activation:
    """g applied to Z (n_l, m); subclasses give the vectorized and scalar forms."""

    name = ""
    elementwise = True

    @property
    def key(self):
        """Hashable identity (name and parameters), used to cache compiled kernels."""
        return (self.name,)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return isinstance(other, Activation) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, xp, Z, out=None):
        """A = 1 / (1 + exp(-Z)), via exp(-|Z|) so nothing overflows. (n, m) -> (n, m)."""
        e = xp.exp(-xp.abs(Z))
        r = 1 / (1 + e)
        return _into(xp.where(Z >= 0, r, e * r), out)

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = dA * A * (1 - A). (n, m) -> (n, m)."""
        return xp.multiply(dA, A * (1 - A), out=out)

    def scalar(self, ftype):
        one = ftype(1.0)

        def g(z):
            if z >= 0:
                return one / (one + math.exp(-z))
            e = math.exp(z)
            return e / (one + e)

        def dg(z, a):
            return a * (one - a)

        return g, dg


class Tanh(Activation):
    name = "tanh"

    def forward(self, xp, Z, out=None):
        """A = tanh(Z). (n, m) -> (n, m)."""
        return xp.tanh(Z, out=out)

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = dA * (1 - A²). (n, m) -> (n, m)."""
        return xp.multiply(dA, 1 - A * A, out=out)

    def scalar(self, ftype):
        one = ftype(1.0)

        def g(z):
            return math.tanh(z)

        def dg(z, a):
            return one - a * a

        return g, dg


class ReLU(Activation):
    name = "relu"

    def forward(self, xp, Z, out=None):
        """A = max(0, Z). (n, m) -> (n, m)."""
        return xp.maximum(Z, 0, out=out)

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = dA where Z > 0, else 0 (the derivative at 0 is 0, as in the course)."""
        return xp.multiply(dA, Z > 0, out=out)

    def scalar(self, ftype):
        zero, one = ftype(0.0), ftype(1.0)

        def g(z):
            return zero if z <= zero else z        # NaN passes, as through max(Z, 0): the cost check sees it

        def dg(z, a):
            return one if z > zero else zero

        return g, dg


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, slope=0.01):
        slope = float(slope)
        if not (math.isfinite(slope) and slope >= 0):
            raise ValueError(f"leaky_relu slope must be a finite number >= 0, got {slope}")
        self.slope = slope

    @property
    def key(self):
        return (self.name, self.slope)

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"

    def forward(self, xp, Z, out=None):
        """A = Z where Z > 0, else slope * Z. (n, m) -> (n, m)."""
        return _into(xp.where(Z > 0, Z, self.slope * Z), out)

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = dA * (1 where Z > 0, else slope). (n, m) -> (n, m)."""
        return xp.multiply(dA, xp.where(Z > 0, 1.0, self.slope).astype(dA.dtype, copy=False), out=out)

    def scalar(self, ftype):
        zero, one, slope = ftype(0.0), ftype(1.0), ftype(self.slope)

        def g(z):
            return z if z > zero else slope * z

        def dg(z, a):
            return one if z > zero else slope

        return g, dg


class Linear(Activation):
    name = "linear"

    def forward(self, xp, Z, out=None):
        """A = Z (identity). (n, m) -> (n, m)."""
        return Z.copy() if out is None else _into(Z, out)

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = dA. (n, m) -> (n, m)."""
        return self.forward(xp, dA, out)

    def scalar(self, ftype):
        one = ftype(1.0)

        def g(z):
            return z

        def dg(z, a):
            return one

        return g, dg


class Softmax(Activation):
    name = "softmax"
    elementwise = False

    def forward(self, xp, Z, out=None):
        """A[:, j] = exp(Z[:, j] - max) / Σ_i exp(Z[i, j] - max), per column. (C, m) -> (C, m)."""
        A = xp.subtract(Z, Z.max(axis=0, keepdims=True), out=out)
        xp.exp(A, out=A)
        A /= A.sum(axis=0, keepdims=True)
        return A

    def backward(self, xp, dA, Z, A, out=None):
        """dZ = A * (dA - Σ_rows dA * A), the softmax Jacobian applied per column."""
        s = (dA * A).sum(axis=0, keepdims=True)
        return xp.multiply(A, dA - s, out=out)


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, ReLU, LeakyReLU, Linear, Softmax)}


def get_activation(spec):
    """An Activation from a name ('relu', 'leaky_relu', ...) or an Activation instance."""
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str) or spec not in ACTIVATIONS:
        raise unknown_name("activation", spec, ACTIVATIONS)
    return ACTIVATIONS[spec]()
