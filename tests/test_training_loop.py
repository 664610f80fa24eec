"""fit: learning-rate schedules, validation data, early stopping, progress output."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastdnn import Network, datasets
from fastdnn.schedules import ExponentialDecay, InverseTimeDecay, StepDecay, get_schedule


def test_schedules_follow_their_formulas():
    assert [InverseTimeDecay(1.0, 2)(0.5, e) for e in range(5)] == [0.5, 0.5, 0.25, 0.25, 0.5 / 3]
    assert ExponentialDecay(0.5)(1.0, 3) == 0.125
    assert [StepDecay(2, 0.1)(1.0, e) for e in (0, 1, 2, 4)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        get_schedule("cosine")


def test_named_schedules_keep_a_useful_rate_for_thousands_of_epochs():
    """The defaults: the course's schedule_lr_decay (decay_rate 1, time_interval 1000) for inverse_time,
    and no default that takes the rate below α0 / 50 within 5000 epochs."""
    from fastdnn.course import schedule_lr_decay
    inverse = get_schedule("inverse_time")
    for epoch in (0, 1, 999, 1000, 2500, 4999, 5000):
        assert inverse(0.0007, epoch) == pytest.approx(schedule_lr_decay(0.0007, epoch, 1.0), rel=1e-15)
    assert get_schedule("step")(1.0, 999) == 1.0 and get_schedule("step")(1.0, 2000) == 0.25
    assert get_schedule("exponential")(1.0, 5000) == pytest.approx(0.9995 ** 5000, rel=1e-12)
    for name in ("inverse_time", "exponential", "step"):
        rate = get_schedule(name)(0.0007, 5000)
        assert 0.0007 / 50 < rate < 0.0007, name


def test_fit_applies_the_schedule_every_epoch(backend):
    X, Y = datasets.moons(m=64, seed=0)
    net = Network([2, 4, 1], device=backend, dtype="float64", seed=0)
    history = net.fit(X, Y, learning_rate=0.4, epochs=4, batch_size=16, schedule=InverseTimeDecay(1.0, 1))
    assert history.learning_rates == pytest.approx([0.4, 0.2, 0.4 / 3, 0.1])
    manual = Network([2, 4, 1], device=backend, dtype="float64", seed=0)
    for e in range(4):                  # the same as four one-epoch fits at the decayed rates
        manual.fit(X, Y, learning_rate=0.4 / (1 + e), epochs=1, batch_size=16, seed=0)
    again = Network([2, 4, 1], device=backend, dtype="float64", seed=0)
    again.fit(X, Y, learning_rate=0.4, epochs=4, batch_size=16, seed=0, schedule=InverseTimeDecay(time_interval=1))
    for key, value in again.parameters.items():
        np.testing.assert_allclose(manual.parameters[key], value, rtol=1e-12)


def test_validation_metrics_are_recorded(backend):
    X, Y = datasets.moons(m=200, seed=1)
    Xv, Yv = datasets.moons(m=100, seed=2)
    net = Network([2, 8, 1], "tanh", device=backend, dtype="float64", seed=0)
    history = net.fit(X, Y, learning_rate=0.5, iterations=201, report_every=50, validation_data=(Xv, Yv))
    assert len(history.val_costs) == 5 and None not in history.val_accuracies
    assert history.val_costs[-1] == pytest.approx(net.cost(Xv, Yv), rel=1e-12)
    assert history.val_accuracies[-1] == pytest.approx(net.accuracy(Xv, Yv))
    assert not history.stopped_early and history.best is None


def test_early_stopping_restores_the_best_parameters(backend):
    rng = np.random.RandomState(0)
    X, Y = rng.randn(5, 20), rng.randint(0, 2, (1, 20))          # noise: validation can only get worse
    Xv, Yv = rng.randn(5, 200), rng.randint(0, 2, (1, 200))
    net = Network([5, 64, 64, 1], device=backend, dtype="float64", seed=0)
    history = net.fit(X, Y, learning_rate=0.05, epochs=400, batch_size=10, optimizer="adam",
                      validation_data=(Xv, Yv), patience=5)
    assert history.stopped_early and len(history) < 400
    assert history.best.val_cost == min(history.val_costs)
    assert net.cost(Xv, Yv) == pytest.approx(history.best.val_cost, rel=1e-12)
    with pytest.raises(ValueError, match="patience needs validation_data"):
        net.fit(X, Y, epochs=1, patience=3)


def test_progress_bar_only_when_asked_or_in_a_terminal(capsys):
    X, Y = datasets.moons(m=40)
    net = Network([2, 3, 1], seed=0)
    net.fit(X, Y, iterations=30, report_every=10)                 # stderr is not a terminal here
    net.fit(X, Y, iterations=30, report_every=10, verbose=0)
    assert capsys.readouterr() == ("", "")
    net.fit(X, Y, iterations=30, report_every=10, verbose=1)
    err = capsys.readouterr().err
    assert "cost=" in err and "30/30" in err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals on this platform")
def test_progress_bar_out_of_the_box_when_stderr_is_a_terminal(tmp_path):
    """fit with its defaults, stderr a (pseudo-)terminal, tqdm installed (every user extra brings it):
    the bar is drawn; the same run with stderr a file stays silent."""
    pytest.importorskip("tqdm", reason="the progress bar needs tqdm (in every extra)")
    code = ("from fastdnn import Network, datasets\nX, Y = datasets.moons(m=40)\n"
            "Network([2, 3, 1], seed=0, device='numpy').fit(X, Y, iterations=30, report_every=10)\n")
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", code]
    leader, follower = os.openpty()
    import fcntl, struct, termios       # noqa: E401  a 24 x 100 terminal (a fresh pty is 0 x 0: tqdm draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(command, stderr=follower, stdout=subprocess.DEVNULL, env=env) as child:
        os.close(follower)               # the child holds the terminal now; read it while it runs
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:              # Linux: EIO once the child has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    os.close(leader)
    assert child.returncode == 0
    in_terminal = b"".join(chunks).decode("utf-8", "replace")
    in_file = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert in_file.returncode == 0 and in_file.stderr == "", in_file.stderr
    assert "30/30" in in_terminal and "cost=" in in_terminal, in_terminal
