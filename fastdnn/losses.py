"""Losses J = (1/m) Σ_examples L(a, y), computed from the output layer's Z and A.

Each loss is written for an array namespace ``xp``. ``total(xp, Z, A, Y)`` is the sum over
all entries, accumulated in float64 as the compiled kernels do (a float32 sum can overflow where the mean
J does not); the caller divides by m; it uses Z where that keeps saturated outputs finite.
For the loss's ``canonical`` output activation, ∂J/∂Z = (A - Y) / m; for other elementwise
output activations the network uses ``dA`` then the activation's derivative.
``scalar(ftype)`` gives the per-entry math for compiled kernels (elementwise losses only).
"""
import math

from .errors import unknown_name


class Loss:
    name = ""
    canonical = ""          # output activation for which dZ = A - Y
    allowed = None          # output activations allowed (None: any elementwise one)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):          # by value, so compiled kernels are shared between networks
        return isinstance(other, Loss) and self.name == other.name

    def __hash__(self):
        return hash(self.name)


class BinaryCrossEntropy(Loss):
    """L = -[y log a + (1-y) log(1-a)], with a = sigmoid(z); labels in {0, 1}."""

    name = "bce"
    canonical = "sigmoid"
    allowed = ("sigmoid",)

    def total(self, xp, Z, A, Y):
        """Σ max(z,0) - z y + log(1 + exp(-|z|)), the same value written in z. Z, Y (n_L, m) -> ()."""
        return (xp.maximum(Z, 0) - Z * Y + xp.log1p(xp.exp(-xp.abs(Z)))).sum(dtype=xp.float64)

    def dA(self, xp, A, Y):
        """∂L/∂A = -(Y / A - (1 - Y) / (1 - A)), the course's dAL. (n_L, m) -> (n_L, m)."""
        return -(Y / A - (1 - Y) / (1 - A))

    def scalar(self, ftype):
        zero = ftype(0.0)

        def cost(z, a, y):
            return (z if z > zero else zero) - z * y + math.log1p(math.exp(-abs(z)))

        return cost


class CategoricalCrossEntropy(Loss):
    """L = -Σ_classes y log a, with a = softmax(z); labels one-hot (C, m) after conversion."""

    name = "ce"
    canonical = "softmax"
    allowed = ("softmax",)

    def total(self, xp, Z, A, Y):
        """Σ_j Σ_i -y_ij (z_ij - logsumexp(z_:j)), finite however large the logits. (C, m) -> ()."""
        zmax = Z.max(axis=0, keepdims=True)
        lse = zmax + xp.log(xp.exp(Z - zmax).sum(axis=0, keepdims=True))
        return -(Y * (Z - lse)).sum(dtype=xp.float64)

    def dA(self, xp, A, Y):
        """∂L/∂A = -Y / A. (C, m) -> (C, m)."""
        return -Y / A


class MeanSquaredError(Loss):
    """L = ½ Σ_rows (a - y)², so that J = (1/2m) Σ ||a - y||² and dZ = (A - Y)/m for linear output."""

    name = "mse"
    canonical = "linear"

    def total(self, xp, Z, A, Y):
        """Σ ½ (A - Y)². (n_L, m) -> ()."""
        D = A - Y
        return 0.5 * (D * D).sum(dtype=xp.float64)

    def dA(self, xp, A, Y):
        """∂L/∂A = A - Y. (n_L, m) -> (n_L, m)."""
        return A - Y

    def scalar(self, ftype):
        half = ftype(0.5)

        def cost(z, a, y):
            d = a - y
            return half * d * d

        return cost


LOSSES = {cls.name: cls for cls in (BinaryCrossEntropy, CategoricalCrossEntropy, MeanSquaredError)}
DEFAULT_LOSS = {"sigmoid": "bce", "softmax": "ce"}   # any other output activation: "mse"


def get_loss(spec, output_activation):
    """A Loss from a name or instance (None: the natural one for the output activation), checked
    against the output activation's name."""
    if spec is None:
        spec = DEFAULT_LOSS.get(output_activation.name, "mse")
    if isinstance(spec, str):
        if spec not in LOSSES:
            raise unknown_name("loss", spec, LOSSES)
        spec = LOSSES[spec]()
    if not isinstance(spec, Loss):
        raise TypeError(f"loss must be a name or a fastdnn.losses.Loss, got {type(spec).__name__}")
    act = output_activation.name
    if (spec.allowed and act not in spec.allowed) or (not spec.allowed and not output_activation.elementwise):
        raise ValueError(f"loss {spec.name!r} does not go with output activation {act!r}; "
                         f"use {DEFAULT_LOSS.get(act, 'mse')!r} or change the output activation")
    return spec
