"""History of a training run: one Record per reported iteration or epoch."""
from collections import namedtuple

Record = namedtuple("Record", "iteration cost seconds learning_rate val_cost val_accuracy",
                    defaults=(None, None, None))


class History:
    """The costs reported during ``fit``: Record(iteration, cost, seconds since start, learning_rate,
    val_cost, val_accuracy), where ``iteration`` counts full-batch steps, or epochs when ``unit`` is
    "epoch". ``stopped_early`` and ``best`` (the record whose parameters were kept) are set by early
    stopping."""

    def __init__(self, unit="iteration"):
        self.unit = unit
        self.records = []
        self.stopped_early = False
        self.best = None

    def append(self, iteration, cost, seconds, learning_rate=None, val_cost=None, val_accuracy=None):
        self.records.append(Record(int(iteration), float(cost), float(seconds), learning_rate,
                                   val_cost, val_accuracy))

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def _column(self, name):
        return [getattr(r, name) for r in self.records]

    iterations = property(lambda self: self._column("iteration"))
    costs = property(lambda self: self._column("cost"))
    seconds = property(lambda self: self._column("seconds"))
    learning_rates = property(lambda self: self._column("learning_rate"))
    val_costs = property(lambda self: self._column("val_cost"))
    val_accuracies = property(lambda self: self._column("val_accuracy"))

    def __repr__(self):
        if not self.records:
            return "History([])"
        first, last = self.records[0], self.records[-1]
        return (f"History({len(self)} records: cost {first.cost:.6g} at {self.unit} {first.iteration} "
                f"-> {last.cost:.6g} at {self.unit} {last.iteration}, {last.seconds:.3g} s)")
