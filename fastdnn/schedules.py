"""Learning-rate schedules α(t) from the initial α0, applied once per epoch (a full-batch step counts
as an epoch). Each is a callable schedule(α0, epoch) -> α.

The defaults decay in steps of 1000 epochs, as the course's ``schedule_lr_decay`` does, so a named
schedule (``schedule="inverse_time"``) still trains at a useful rate after thousands of epochs:
at epoch 5000, α0 / 6 (inverse_time), α0 · 0.5^5 ≈ α0 / 32 (step) and α0 · 0.9995^5000 ≈ α0 / 12
(exponential, which decays a little every epoch). Pass ``time_interval=1`` for the course's
``update_lr`` (decay every epoch), which suits tens of epochs, not thousands."""
import math

from ._checks import number
from .errors import unknown_name


class InverseTimeDecay:
    """α = α0 / (1 + decay_rate · ⌊epoch / time_interval⌋), the course's ``schedule_lr_decay``
    (decay_rate 1, time_interval 1000 by default, as there)."""

    def __init__(self, decay_rate=1.0, time_interval=1000):
        self.decay_rate, self.time_interval = _nonneg("decay_rate", decay_rate), _interval(time_interval)

    def __call__(self, lr0, epoch):
        return lr0 / (1 + self.decay_rate * (epoch // self.time_interval))


class ExponentialDecay:
    """α = α0 · decay_rate^⌊epoch / time_interval⌋ (by default 0.9995 every epoch: α0 / 12 at 5000)."""

    def __init__(self, decay_rate=0.9995, time_interval=1):
        if not 0 < number("decay_rate", decay_rate) <= 1:
            raise ValueError(f"decay_rate must be in (0, 1]; got {decay_rate}")
        self.decay_rate, self.time_interval = float(decay_rate), _interval(time_interval)

    def __call__(self, lr0, epoch):
        return lr0 * self.decay_rate ** (epoch // self.time_interval)


class StepDecay:
    """α = α0 · factor^⌊epoch / step_size⌋ (α drops by ``factor`` every ``step_size`` epochs: by default
    halved every 1000)."""

    def __init__(self, step_size=1000, factor=0.5):
        if not 0 < number("factor", factor) <= 1:
            raise ValueError(f"factor must be in (0, 1]; got {factor}")
        self.step_size, self.factor = _interval(step_size, "step_size"), float(factor)

    def __call__(self, lr0, epoch):
        return lr0 * self.factor ** (epoch // self.step_size)


SCHEDULES = {"inverse_time": InverseTimeDecay, "exponential": ExponentialDecay, "step": StepDecay}


def get_schedule(spec):
    """None, a name ('inverse_time', 'exponential', 'step', with default settings) or a callable."""
    if spec is None or callable(spec):
        return spec
    if spec not in SCHEDULES:
        raise unknown_name("schedule", spec, SCHEDULES)
    return SCHEDULES[spec]()


def _nonneg(name, value):
    value = number(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value


def _interval(value, name="time_interval"):
    value = number(name, value)
    if not math.isfinite(value) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value:g}")
    return int(value)
