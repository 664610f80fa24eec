"""scikit-learn estimators on a fastdnn Network: ``DNNClassifier`` and ``DNNRegressor``.

They take X as scikit-learn does, (n_samples, n_features), and hand the network the course's layout
X.T (n[0], m) with m = n_samples; outputs come back as (n_samples, ...) float64 arrays. Nothing is
scaled implicitly: put a ``StandardScaler`` in front of them in a ``Pipeline``.

Needs scikit-learn >= 1.6 (``pip install "fastdnn[sklearn]"``); ``import fastdnn`` does not import
this module or scikit-learn.
"""
import functools
import math
import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:          # pragma: no cover - exercised in a subprocess test
    raise ImportError("fastdnn.sklearn needs scikit-learn >= 1.6; install it with "
                      "pip install \"fastdnn[sklearn]\"") from exc

from .network import Network
from .schedules import get_schedule

__all__ = ["DNNClassifier", "DNNRegressor"]

_SEED_BOUND = 2**31 - 1          # seeds for Network (initialization, dropout) and the epoch order

_PARAMETERS_DOC = """
    Parameters (each goes to ``fastdnn.Network`` or to ``Network.fit``)
    ----------------------------------------------------------------------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Units of the hidden layers n[1], ..., n[L-1]; layer_dims = [n_features, *these, n_outputs].
        ``()`` is no hidden layer (logistic / linear regression).
    hidden_activation : str or list of str, default="relu"
        Network's ``hidden_activation``: one name, or one per hidden layer.
    init : str, default="he"
        Network's ``init``: "he", "xavier", "scaled", "small", "large" or "zeros".
    l2 : float, default=0.0
        L2 strength λ: J += λ/(2m) Σ ||W[l]||².
    keep_prob : float or list of float, default=1.0
        Inverted dropout on the hidden layers while training (1 = off).
    optimizer : str or fastdnn.optimizers.Optimizer, default="adam"
        "gd", "momentum", "rmsprop", "adam", "adagrad", or an optimizer object.
    learning_rate : float or None, default=0.001
        α; None takes the optimizer object's own rate, else fastdnn's 0.0075.
    epochs : int, default=200
        Passes over the training data in ``fit`` (``partial_fit`` makes one).
    batch_size : int or None, default=32
        Examples per step (at most n_samples); None is the whole set (full-batch gradient descent:
        one step per epoch, the course's "iterations").
    shuffle : bool, default=True
        A new random order of the examples every epoch.
    schedule : str, callable or None, default=None
        Learning-rate schedule from fastdnn.schedules ("inverse_time", "exponential", "step" or a
        callable schedule(α0, epoch) -> α), applied per epoch; ``partial_fit`` calls continue it.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for classifiers) and stop
        after ``patience`` epochs without a lower validation cost, keeping the best parameters.
    validation_fraction : float, default=0.1
        Fraction held out when ``early_stopping`` is on, in (0, 1).
    patience : int, default=10
        Epochs without a better validation cost before stopping (with ``early_stopping``).
    device : str, default="auto"
        Network's ``device``: "auto", "cpu", "cuda", "cuda:N" or a backend name ("numba", "numpy",
        ...). "cuda" falls back to the CPU with a ``fastdnn.DeviceFallbackWarning`` when CUDA cannot
        be used; a backend name that cannot be used raises ``fastdnn.BackendUnavailableError``.
    dtype : str, default="float64"
        "float64" or "float32": what the network computes in; outputs are float64 either way.
        float64 (unlike Network's float32 default) makes a row's prediction independent of the
        other rows predicted with it, as scikit-learn expects; float32 is faster for large networks,
        but BLAS may round a row differently in a batch of another size (~1e-7 relative).
    random_state : int, RandomState or None, default=None
        Seeds the initialization, the dropout masks, the epoch order and the validation split:
        an int gives the same model on every fit.
    verbose : int, default=0
        Network.fit's ``verbose``: 0 silent, 1 a progress bar, 2 the course's cost lines.
    skip : int, list of (l, k) pairs or None, default=None
        Network's ``skip``: residual connections (2: a block every two hidden layers).
    projection : str, default="learned"
        Network's ``projection`` where a skip joins layers of different widths: "learned" or "pad".
    batch_norm : bool or list of bool, default=False
        Network's ``batch_norm``: batch normalization on every (True) or the chosen hidden layers.

    Not exposed: ``fit``'s ``comm`` (MPI data parallelism), ``report_every`` (every epoch is
    recorded), ``iterations`` (use ``batch_size=None``); ``loss`` and ``output_activation`` follow
    from the task."""


def _unchanged_on_error(method):
    """If the call raises, the estimator's attributes are put back as they were (a network that
    was being trained keeps what fastdnn keeps: see Network.fit)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        saved = dict(vars(self))
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise
    return call


class _DNNBase(BaseEstimator):
    """What DNNClassifier and DNNRegressor share: parameters, data layout, training and prediction."""

    def __init__(self, hidden_layer_sizes=(100,), hidden_activation="relu", init="he", l2=0.0,
                 keep_prob=1.0, optimizer="adam", learning_rate=0.001, epochs=200, batch_size=32,
                 shuffle=True, schedule=None, early_stopping=False, validation_fraction=0.1,
                 patience=10, device="auto", dtype="float64", random_state=None, verbose=0, skip=None,
                 projection="learned", batch_norm=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.hidden_activation = hidden_activation
        self.init = init
        self.l2 = l2
        self.keep_prob = keep_prob
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.dtype = dtype
        self.skip = skip
        self.projection = projection
        self.batch_norm = batch_norm
        self.random_state = random_state
        self.verbose = verbose

    # --- what the subclasses define ----------------------------------------------------------------
    # _validate_y(y) -> y checked;
    # _start_targets(y, classes, partial) -> (encoded y, n_outputs, fitted attributes);
    # _encode(y) -> encoded y (n_samples,) or (n_samples, k), after the first partial_fit;
    # _course_Y(y_enc, n_outputs) -> Y for Network.fit;  _output_activation(n_outputs) -> its name.

    # --- training ----------------------------------------------------------------------------------
    @_unchanged_on_error
    def fit(self, X, y):
        """Train a new network for ``epochs`` epochs on X (n_samples, n_features) and y; returns self."""
        X, y = self._check_data(X, y, reset=True)
        y_enc, n_outputs, attrs = self._start_targets(y, None, partial=False)
        rng = check_random_state(self.random_state)
        network, shuffle_seed = self._new_network(X.shape[1], n_outputs, rng)
        validation, patience = None, None
        if self.early_stopping:
            X, y_enc, validation = self._hold_out(X, y_enc, rng, n_outputs)
            patience = self.patience
        history = self._train(network, X, y_enc, self.epochs, shuffle_seed, validation, patience,
                              get_schedule(self.schedule))
        self._set_fitted(attrs, network, shuffle_seed, history, [])
        return self

    @_unchanged_on_error
    def _partial_fit(self, X, y, classes=None):
        """One epoch on (X, y), starting a network on the first call (classes: the classifier's).
        Early stopping does not apply; a schedule goes on from the epochs already trained."""
        first = not hasattr(self, "network_")
        X, y = self._check_data(X, y, reset=first)
        if first:
            y_enc, n_outputs, attrs = self._start_targets(y, classes, partial=True)
            network, shuffle_seed = self._new_network(X.shape[1], n_outputs,
                                                       check_random_state(self.random_state))
            losses = []
        else:
            self._check_partial_classes(classes)
            y_enc, attrs = self._encode(y), {}
            network, shuffle_seed, losses = self.network_, self._shuffle_seed, self.loss_curve_
        # a schedule counts the network's epochs, so it goes on across calls by itself
        history = self._train(network, X, y_enc, 1, shuffle_seed, None, None, get_schedule(self.schedule))
        self._set_fitted(attrs, network, shuffle_seed, history, losses)
        return self

    def _check_partial_classes(self, classes):
        """partial_fit after the first call: classes may be given again, but only the same."""

    def _check_data(self, X, y, reset):
        """X (n_samples, n_features) as float32/float64, y checked by the subclass."""
        X, y = validate_data(self, X, y, reset=reset, accept_sparse=False, dtype=[np.float64, np.float32],
                             **self._y_check)
        return X, self._validate_y(y)

    def _new_network(self, n_features, n_outputs, rng):
        """A Network [n_features, *hidden_layer_sizes, n_outputs] and the seed of its epoch order."""
        dims = [n_features, *_hidden_sizes(self.hidden_layer_sizes), n_outputs]
        seed, shuffle_seed = (int(s) for s in rng.randint(_SEED_BOUND, size=2))
        network = Network(dims, hidden_activation=self.hidden_activation,
                          output_activation=self._output_activation(n_outputs), init=self.init,
                          device=self.device, dtype=self.dtype, seed=seed, l2=self.l2,
                          keep_prob=self.keep_prob, skip=self.skip, projection=self.projection,
                          batch_norm=self.batch_norm)
        return network, shuffle_seed

    def _hold_out(self, X, y_enc, rng, n_outputs):
        """(X_train, y_train, validation_data) with validation_fraction of the examples held out."""
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be a number in (0, 1); got {fraction!r}")
        m = X.shape[0]
        n_val = math.ceil(fraction * m)
        train, val = train_test_split(np.arange(m), test_size=n_val, random_state=rng,
                                      stratify=self._stratify(y_enc, n_val))
        return X[train], y_enc[train], (X[val].T, self._course_Y(y_enc[val], n_outputs))

    def _stratify(self, y_enc, n_val):
        """The labels to stratify the validation split by (None: a plain random split)."""
        return None

    def _train(self, network, X, y_enc, epochs, shuffle_seed, validation, patience, schedule):
        """Network.fit on the course layout X.T (n_features, m) and Y; returns its History."""
        Y = self._course_Y(y_enc, network.layer_dims[-1])
        return network.fit(X.T, Y, learning_rate=self.learning_rate, epochs=epochs,
                           batch_size=self._batch_size(X.shape[0]), shuffle=self.shuffle,
                           seed=shuffle_seed, optimizer=self.optimizer, schedule=schedule,
                           validation_data=validation, patience=patience, verbose=self.verbose)

    def _batch_size(self, m):
        size = self.batch_size
        if size is None:
            return None
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 or None; got {size!r}")
        return min(int(size), m)

    def _set_fitted(self, attrs, network, shuffle_seed, history, losses):
        """Set the fitted attributes only once training has succeeded."""
        for name, value in attrs.items():
            setattr(self, name, value)
        self.network_ = network
        self.history_ = history
        self.loss_curve_ = losses + history.costs
        self.loss_ = history.costs[-1]
        self.n_iter_ = network.epoch
        self._shuffle_seed = shuffle_seed

    # --- prediction --------------------------------------------------------------------------------
    def _forward(self, X):
        """The network's output A[L].T for X (n_samples, n_features) -> (n_samples, n_outputs), float64."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, accept_sparse=False, dtype=[np.float64, np.float32])
        return np.asarray(self.network_.forward(X.T), dtype=np.float64).T


class DNNClassifier(ClassifierMixin, _DNNBase):
    __doc__ = """A deep L-layer network classifier: sigmoid output (1 unit) for 2 classes, softmax (C units)
    for C > 2; y (n_samples,) of any label type (ints, strings, bools, integral floats).

    Fitted attributes: ``classes_`` (sorted labels), ``network_`` (the fastdnn.Network),
    ``history_`` (the last fit's fastdnn.History), ``loss_curve_`` (cost per epoch, over every
    partial_fit), ``loss_`` (the last epoch's cost), ``n_iter_`` (epochs trained),
    ``n_features_in_`` (and ``feature_names_in_`` for DataFrames).
    """ + _PARAMETERS_DOC

    _y_check = dict(multi_output=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y); the first call needs ``classes`` (every label that will occur)."""
        return self._partial_fit(X, y, classes)

    def predict_proba(self, X):
        """P(class | x) for X (n_samples, n_features) -> (n_samples, n_classes), columns in classes_ order."""
        A = self._forward(X)
        if len(self.classes_) == 2:
            return np.hstack([1.0 - A, A])
        return A

    def predict_log_proba(self, X):
        """log P(class | x) -> (n_samples, n_classes)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable label for each row of X -> (n_samples,), of the labels' type."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _validate_y(self, y):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return y

    def _start_targets(self, y, classes, partial):
        """classes_ (from y in fit, from ``classes`` in a first partial_fit) and y as class ids."""
        if partial and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(every label that will occur, e.g. classes=np.unique(y_all))")
        labels = np.unique(y if classes is None else column_or_1d(classes))
        if len(labels) < 2:
            raise ValueError(f"DNNClassifier needs at least 2 classes; got 1 class: {_listed(labels)}")
        ids = _class_ids(labels, y)
        n_outputs = 1 if len(labels) == 2 else len(labels)
        return ids, n_outputs, {"classes_": labels}

    def _check_partial_classes(self, classes):
        if classes is not None and not np.array_equal(np.unique(column_or_1d(classes)), self.classes_):
            raise ValueError(f"classes [{_listed(np.unique(classes))}] differ from the classes of the "
                             f"first partial_fit call, [{_listed(self.classes_)}]")

    def _encode(self, y):
        return _class_ids(self.classes_, y)

    def _course_Y(self, ids, n_outputs):
        """Binary (1 output): Y (1, m) of 0/1; multiclass: class ids (m,) (Network makes them one-hot)."""
        return ids.reshape(1, -1) if n_outputs == 1 else ids

    def _output_activation(self, n_outputs):
        return "sigmoid" if n_outputs == 1 else "softmax"

    def _stratify(self, y_enc, n_val):
        """Stratified when it can be: every class twice or more, and room for each on both sides."""
        counts = np.bincount(y_enc)
        counts = counts[counts > 0]
        feasible = counts.min() >= 2 and len(counts) <= min(n_val, len(y_enc) - n_val)
        return y_enc if feasible else None


class DNNRegressor(RegressorMixin, _DNNBase):
    __doc__ = """A deep L-layer network regressor: linear output, mean squared error; y (n_samples,) or
    (n_samples, n_targets), predictions of the same shape.

    Fitted attributes: ``n_outputs_``, ``network_`` (the fastdnn.Network), ``history_``,
    ``loss_curve_``, ``loss_`` (costs J = (1/2m) Σ ||ŷ - y||²), ``n_iter_`` (epochs trained),
    ``n_features_in_`` (and ``feature_names_in_`` for DataFrames).
    """ + _PARAMETERS_DOC

    _y_check = dict(multi_output=True, y_numeric=True)

    def partial_fit(self, X, y):
        """One epoch on (X, y); the first call starts the network."""
        return self._partial_fit(X, y)

    def predict(self, X):
        """ŷ for X (n_samples, n_features) -> (n_samples,) or (n_samples, n_targets), as y in fit."""
        A = self._forward(X)
        return A.ravel() if self._y_1d else A

    def _validate_y(self, y):
        return np.asarray(y, dtype=np.float64)

    def _start_targets(self, y, classes, partial):
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        return y, n_outputs, {"n_outputs_": n_outputs, "_y_1d": y.ndim == 1}

    def _encode(self, y):
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if n_outputs != self.n_outputs_ or (y.ndim == 1) != self._y_1d:
            fitted = "(n_samples,)" if self._y_1d else f"(n_samples, {self.n_outputs_})"
            raise ValueError(f"y has shape {y.shape}, but this DNNRegressor was fitted on y of shape "
                             f"{fitted}")
        return y

    def _course_Y(self, y, n_outputs):
        """Y (n_outputs, m): one row per target."""
        return y.reshape(y.shape[0], -1).T

    def _output_activation(self, n_outputs):
        return "linear"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _hidden_sizes(sizes):
    """hidden_layer_sizes as a list [n1, ..., n[L-1]] of positive ints (an int is one layer)."""
    seq = [sizes] if isinstance(sizes, numbers.Integral) else sizes
    try:
        seq = list(seq)
    except TypeError:
        seq = None
    if seq is None or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
                              for n in seq):
        raise ValueError(f"hidden_layer_sizes must be positive integers, one per hidden layer; "
                         f"got {sizes!r}")
    return [int(n) for n in seq]


def _class_ids(labels, y):
    """Index of each y in the sorted labels -> (n_samples,) int64; ValueError for unknown labels."""
    ids = np.searchsorted(labels, y)
    ids = np.minimum(ids, len(labels) - 1)
    unknown = labels[ids] != y
    if np.any(unknown):
        raise ValueError(f"y contains labels not in classes_ [{_listed(labels)}]: "
                         f"{_listed(np.unique(y[unknown]))}")
    return ids.astype(np.int64)


def _listed(values):
    """'a', 'b' / 0, 1: labels as the user wrote them, without NumPy's array repr."""
    return ", ".join(repr(v) for v in np.asarray(values).tolist())
