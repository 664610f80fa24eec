"""History of a training run: (iteration or epoch, cost, seconds) records."""
from collections import namedtuple

Record = namedtuple("Record", "iteration cost seconds")


class History:
    """The costs reported during ``fit``: iterable of Record(iteration, cost, seconds since start),
    where ``iteration`` counts full-batch steps, or epochs when ``unit`` is "epoch"."""

    def __init__(self, unit="iteration"):
        self.unit = unit
        self.records = []

    def append(self, iteration, cost, seconds):
        self.records.append(Record(int(iteration), float(cost), float(seconds)))

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    @property
    def iterations(self):
        return [r.iteration for r in self.records]

    @property
    def costs(self):
        return [r.cost for r in self.records]

    @property
    def seconds(self):
        return [r.seconds for r in self.records]

    def __repr__(self):
        if not self.records:
            return "History([])"
        first, last = self.records[0], self.records[-1]
        return (f"History({len(self)} records: cost {first.cost:.6g} at {self.unit} {first.iteration} "
                f"-> {last.cost:.6g} at {self.unit} {last.iteration}, {last.seconds:.3g} s)")
