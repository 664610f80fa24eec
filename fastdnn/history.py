"""History of a training run: one Record per reported iteration or epoch."""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple


class Record(NamedTuple):
    iteration: int
    cost: float
    seconds: float
    learning_rate: float | None = None
    val_cost: float | None = None
    val_accuracy: float | None = None


class History:
    """The costs reported during ``fit``: Record(iteration, cost, seconds since start, learning_rate,
    val_cost, val_accuracy), where ``iteration`` counts full-batch steps, or epochs when ``unit`` is
    "epoch". ``stopped_early`` and ``best`` (the record whose parameters were kept) are set by early
    stopping."""

    def __init__(self, unit: str = "iteration") -> None:
        self.unit: str = unit
        self.records: list[Record] = []
        self.stopped_early: bool = False
        self.best: Record | None = None

    def append(self, iteration: int, cost: float, seconds: float, learning_rate: float | None = None,
               val_cost: float | None = None, val_accuracy: float | None = None) -> None:
        self.records.append(Record(int(iteration), float(cost), float(seconds), learning_rate,
                                   val_cost, val_accuracy))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def _column(self, name):
        return [getattr(r, name) for r in self.records]

    iterations = property(lambda self: self._column("iteration"))
    costs = property(lambda self: self._column("cost"))
    seconds = property(lambda self: self._column("seconds"))
    learning_rates = property(lambda self: self._column("learning_rate"))
    val_costs = property(lambda self: self._column("val_cost"))
    val_accuracies = property(lambda self: self._column("val_accuracy"))

    def __repr__(self) -> str:
        if not self.records:
            return "History([])"
        first, last = self.records[0], self.records[-1]
        return (f"History({len(self)} records: cost {first.cost:.6g} at {self.unit} {first.iteration} "
                f"-> {last.cost:.6g} at {self.unit} {last.iteration}, {last.seconds:.3g} s)")
