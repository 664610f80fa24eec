"""Optimizers: (θ', state') = update(θ, dθ, state) over the flat parameter buffer, as in the course.

Each optimizer is written twice from the same formulas: ``update(xp, ...)`` vectorized for an array
namespace, and ``scalar(ftype)`` — one parameter's update in ``math``-only code for fused kernels,
``(θ, g, s1, s2, α, c1, c2) -> (θ', s1', s2')`` with the bias corrections c1 = 1/(1-β1^t),
c2 = 1/(1-β2^t) computed once per step. ``n_state`` flat state buffers (velocity, squares) live on the
backend next to the parameters. Updates are out of place: θ' and state' go to other buffers than θ and
state, so a step that fails or is interrupted leaves the previous ones whole.
"""
import math

from ._checks import number
from .errors import unknown_name


class Optimizer:
    name = ""
    n_state = 0
    nonnegative_states = ()     # state buffers that are means of squared gradients (never negative)

    def __init__(self, learning_rate=None):
        self.learning_rate = None if learning_rate is None else _positive("learning_rate", learning_rate)

    def corrections(self, t):
        """(c1, c2) for step t >= 1 (1, 1 unless the optimizer corrects a bias)."""
        return self.scalar_corrections()(t)

    def scalar_corrections(self):
        """corrections as a ``math``-only function of t, for compiled loops that step many times."""
        def corrections(t):
            return 1.0, 1.0
        return corrections

    @property
    def key(self):
        """Hyper-parameters that change the compiled kernel (not the learning rate)."""
        return (self.name,) + tuple(v for k, v in sorted(vars(self).items()) if k != "learning_rate")

    def __eq__(self, other):
        return isinstance(other, Optimizer) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in sorted(vars(self).items()) if v is not None)
        return f"{type(self).__name__}({args})"


class GradientDescent(Optimizer):
    name = "gd"

    def update(self, xp, theta, dtheta, states, states_out, lr, c1, c2, out):
        """θ' = θ - α dθ."""
        return xp.subtract(theta, lr * dtheta, out=out)

    def scalar(self, ftype):
        def step(theta, g, s1, s2, lr, c1, c2):
            return theta - lr * g, s1, s2
        return step


class Momentum(Optimizer):
    name = "momentum"
    n_state = 1

    def __init__(self, learning_rate=None, beta=0.9):
        super().__init__(learning_rate)
        self.beta = _fraction("beta", beta)

    def update(self, xp, theta, dtheta, states, states_out, lr, c1, c2, out):
        """v' = β v + (1-β) dθ; θ' = θ - α v'."""
        v = xp.multiply(states[0], self.beta, out=states_out[0])
        v += (1 - self.beta) * dtheta
        return xp.subtract(theta, lr * v, out=out)

    def scalar(self, ftype):
        beta, one = ftype(self.beta), ftype(1.0)

        def step(theta, g, v, s2, lr, c1, c2):
            v = beta * v + (one - beta) * g
            return theta - lr * v, v, s2
        return step


class RMSProp(Optimizer):
    name = "rmsprop"
    n_state = 1
    nonnegative_states = (0,)

    def __init__(self, learning_rate=None, beta=0.999, epsilon=1e-8):
        super().__init__(learning_rate)
        self.beta, self.epsilon = _fraction("beta", beta), _positive("epsilon", epsilon)

    def update(self, xp, theta, dtheta, states, states_out, lr, c1, c2, out):
        """s' = β s + (1-β) dθ²; θ' = θ - α dθ / (√s' + ε)."""
        s = xp.multiply(states[0], self.beta, out=states_out[0])
        s += (1 - self.beta) * dtheta * dtheta
        return xp.subtract(theta, lr * dtheta / (xp.sqrt(s) + self.epsilon), out=out)

    def scalar(self, ftype):
        beta, one, eps = ftype(self.beta), ftype(1.0), ftype(self.epsilon)

        def step(theta, g, s, s2, lr, c1, c2):
            s = beta * s + (one - beta) * g * g
            return theta - lr * g / (math.sqrt(s) + eps), s, s2
        return step


class Adam(Optimizer):
    name = "adam"
    n_state = 2
    nonnegative_states = (1,)

    def __init__(self, learning_rate=None, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2 = _fraction("beta1", beta1), _fraction("beta2", beta2)
        self.epsilon = _positive("epsilon", epsilon)

    def scalar_corrections(self):
        b1, b2 = self.beta1, self.beta2

        def corrections(t):
            return 1.0 / (1.0 - b1 ** t), 1.0 / (1.0 - b2 ** t)
        return corrections

    def update(self, xp, theta, dtheta, states, states_out, lr, c1, c2, out):
        """v' = β1 v + (1-β1) dθ; s' = β2 s + (1-β2) dθ²; θ' = θ - α (v' c1) / (√(s' c2) + ε)."""
        v = xp.multiply(states[0], self.beta1, out=states_out[0])
        v += (1 - self.beta1) * dtheta
        s = xp.multiply(states[1], self.beta2, out=states_out[1])
        s += (1 - self.beta2) * dtheta * dtheta
        return xp.subtract(theta, lr * (v * c1) / (xp.sqrt(s * c2) + self.epsilon), out=out)

    def scalar(self, ftype):
        b1, b2, one, eps = ftype(self.beta1), ftype(self.beta2), ftype(1.0), ftype(self.epsilon)

        def step(theta, g, v, s, lr, c1, c2):
            v = b1 * v + (one - b1) * g
            s = b2 * s + (one - b2) * g * g
            return theta - lr * (v * c1) / (math.sqrt(s * c2) + eps), v, s
        return step


class AdaGrad(Optimizer):
    name = "adagrad"
    n_state = 1
    nonnegative_states = (0,)

    def __init__(self, learning_rate=None, epsilon=1e-8):
        super().__init__(learning_rate)
        self.epsilon = _positive("epsilon", epsilon)

    def update(self, xp, theta, dtheta, states, states_out, lr, c1, c2, out):
        """G' = G + dθ²; θ' = θ - α dθ / (√G' + ε)."""
        G = xp.add(states[0], dtheta * dtheta, out=states_out[0])
        return xp.subtract(theta, lr * dtheta / (xp.sqrt(G) + self.epsilon), out=out)

    def scalar(self, ftype):
        eps = ftype(self.epsilon)

        def step(theta, g, G, s2, lr, c1, c2):
            G = G + g * g
            return theta - lr * g / (math.sqrt(G) + eps), G, s2
        return step


OPTIMIZERS = {cls.name: cls for cls in (GradientDescent, Momentum, RMSProp, Adam, AdaGrad)}


def get_optimizer(spec):
    """An Optimizer from a name ('gd', 'momentum', 'rmsprop', 'adam', 'adagrad') or an instance."""
    if isinstance(spec, Optimizer):
        return spec
    if not isinstance(spec, str) or spec not in OPTIMIZERS:
        raise unknown_name("optimizer", spec, OPTIMIZERS)
    return OPTIMIZERS[spec]()


def _positive(name, value):
    value = number(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value}")
    return value


def _fraction(name, value):
    value = number(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1); got {value}")
    return value
