"""The training loop behind ``Network.fit``: full-batch steps or mini-batch epochs, reports with
validation cost and accuracy, learning-rate schedules, early stopping, and the progress bar."""
import math
import sys
import time

import numpy as np

from .errors import TrainingDivergedError
from .history import History


# Full-batch steps between two reports run in calls of about this long (a first call of FIRST_QUIET_CALL steps,
# then each at most 4x the one before, sized by the last call's time and kept per batch size on the engine):
# a compiled call cannot be interrupted, and a Ctrl-C waited for the next report (seen: 43 s). Measured, [2, 4, 1]
# float32 (1.9 µs a step): a network's first fit of 2000 steps makes calls of 16, 64, 256, 1024 and 638 steps, later
# ones a single call; 20 calls of 100 steps cost what one call of 2000 does, within ±3 µs.
QUIET_CALL_S = 0.1
FIRST_QUIET_CALL = 16


class TrainingLoop:
    """The training loop of ``Network.fit``: steps or epochs, reports, validation, early stopping,
    progress. ``history`` fills as it runs (an interrupted fit keeps what was recorded)."""

    def __init__(self, engine, Xd, Yd, unit, batch_size, shuffle, seed, count, learning_rate, schedule,
                 validation, patience, report_every, verbose):
        self.engine, self.Xd, self.Yd, self.unit, self.m = engine, Xd, Yd, unit, Xd.shape[1]
        if unit == "epoch":                  # batches are gathered from one example per row
            self.Xd, self.Yd = engine.example_major(Xd, Yd)
        self.batch_size, self.shuffle, self.buffers = batch_size, shuffle, {}
        self.seed = engine.seed if seed is None else seed
        self.count, self.lr0, self.schedule = count, learning_rate, schedule
        self.validation, self.patience = validation, patience
        self.report_every, self.verbose = report_every, verbose
        self.history = History(unit)

    def plan(self):
        """What every rank of a data-parallel fit must agree on (the steps and reports to take)."""
        schedule = self.schedule and (type(self.schedule).__qualname__, sorted(vars(self.schedule).items())
                                      if hasattr(self.schedule, "__dict__") else None)
        return (self.unit, self.count, self.batch_size, self.lr0, schedule, self.report_every,
                self.validation is not None, self.patience)

    def learning_rate(self, ahead=0):
        """α for the step or epoch ``ahead`` after the next: the schedule's, counted over every call (so
        N then M iterations or epochs follow the same schedule as N + M), checked."""
        if not self.schedule:
            return self.lr0
        engine = self.engine
        counter = (engine.iteration if self.unit == "iteration" else engine.epoch) + ahead
        lr = self.schedule(self.lr0, counter)
        if not (isinstance(lr, (int, float, np.floating, np.integer)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"schedule {self.schedule!r} gave learning rate {lr!r} at {self.unit} {counter}; "
                             "it must be a finite number > 0")
        return float(lr)

    def step(self, learning_rate, report):
        engine = self.engine
        if self.unit == "iteration":     # one step, through the same compiled loop as the quiet ones
            return engine.train_steps(self.Xd, self.Yd, [learning_rate], check=report)
        return engine.train_epoch(self.Xd, self.Yd, learning_rate, self.batch_size, self.shuffle, self.seed,
                                  self.buffers)

    def quiet_steps(self, n, bar=None):
        """n steps or epochs between two reports; full-batch steps go to the engine together, in calls
        of about QUIET_CALL_S each (one compiled call where the backend can): a Ctrl-C, raised only when
        a compiled call returns, and the progress bar wait no longer than that."""
        engine = self.engine
        if self.unit == "epoch":
            for _ in range(n):
                self.step(self.learning_rate(), report=False)
                if bar is not None:
                    bar.update(1)
            return
        chunks = engine.quiet_chunks
        while n > 0:
            k = n if engine.parallel is not None else min(n, chunks.get(self.m, FIRST_QUIET_CALL))
            start = time.perf_counter()
            engine.train_steps(self.Xd, self.Yd, [self.learning_rate(j) for j in range(k)], check=False)
            seconds = time.perf_counter() - start
            chunks[self.m] = max(1, min(4 * k, int(k * QUIET_CALL_S / max(seconds, 1e-9))))
            n -= k
            if bar is not None:
                bar.update(k)

    def run(self):
        engine, history, start = self.engine, self.history, time.perf_counter()
        count, validation = self.count, self.validation
        patience, report_every, verbose = self.patience, self.report_every, self.verbose
        ws_val = validation and engine.evaluation_workspace(validation[0].shape[1])
        best = None                             # (val_cost, record index, θ copy)
        bar = _progress_bar(count, self.unit, verbose)
        engine.begin_call()
        try:
            i = 0
            while i < count:            # step i is reported: i % report_every == 0, or the last
                learning_rate = self.learning_rate()
                cost = self.step(learning_rate, report=True)
                val = engine.evaluate_now(*validation, ws_val) if validation else (None, None)
                history.append(i, engine.backend.scalar(cost), time.perf_counter() - start, learning_rate, *val)
                self.show(bar, history[-1], verbose)
                if bar is not None:
                    bar.update(1)
                if patience is not None:
                    if best is None or val[0] < best[0]:
                        theta = engine.theta
                        best = (val[0], len(history) - 1, theta.copy() if best is None else _copy(best[2], theta))
                    elif len(history) - 1 - best[1] >= patience:
                        history.stopped_early = True
                        break
                following = min((i // report_every + 1) * report_every, count - 1)   # the next report
                if following > i + 1:
                    self.quiet_steps(following - i - 1, bar)
                i = following if following > i else count
            if best is not None:
                engine.restore_theta(best[2])
                history.best = history[best[1]]
            engine.end_call()
        except TrainingDivergedError as exc:
            exc.history = history
            raise
        finally:
            if bar is not None:
                bar.close()
        return history

    def show(self, bar, record, verbose):
        if verbose == 2:
            print(f"Cost after {self.unit} {record.iteration}: {record.cost:.6f}"
                  + (f"  validation cost {record.val_cost:.6f}" if record.val_cost is not None else ""))
        elif bar is not None:
            extra = {} if record.val_cost is None else {"val_cost": f"{record.val_cost:.4g}"}
            bar.set_postfix(cost=f"{record.cost:.4g}", **extra)


def _copy(dst, src):
    dst[...] = src
    return dst


def _progress_bar(count, unit, verbose):
    """A tqdm bar on stderr (None when silent, verbose=2, or tqdm is not installed)."""
    if verbose in (0, False, 2):
        return None
    if verbose is None and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=count, unit=unit, file=sys.stderr)
