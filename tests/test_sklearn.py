"""fastdnn.sklearn: scikit-learn's own estimator checks, the (n_samples, n_features) <-> course layout
against the float64 oracle, label types, partial_fit, hyper-parameters, devices, reproducibility,
meta-estimators and joblib, pickling, errors, and the README's example."""
import copy
import inspect
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

pytest.importorskip("sklearn", reason="fastdnn.sklearn needs scikit-learn: pip install 'fastdnn[sklearn]'")

import joblib                                                              # noqa: E402  (comes with sklearn)
from sklearn.base import clone                                             # noqa: E402
from sklearn.datasets import make_blobs, make_moons                       # noqa: E402
from sklearn.exceptions import NotFittedError                             # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline                                # noqa: E402
from sklearn.preprocessing import StandardScaler                          # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks         # noqa: E402

import fastdnn                                                             # noqa: E402
import fastdnn.sklearn as fsk                                              # noqa: E402
from fastdnn.schedules import ExponentialDecay                             # noqa: E402
from fastdnn.sklearn import DNNClassifier, DNNRegressor                    # noqa: E402

import oracle                                                              # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(hidden_layer_sizes=(8,), epochs=30, learning_rate=0.01, device="numpy", random_state=0)


# --- scikit-learn's own checks ----------------------------------------------------------------------
def small(cls, **kwargs):
    """The defaults, but 16 hidden units and 50 epochs: enough for the checks' accuracy thresholds."""
    return cls(hidden_layer_sizes=(16,), epochs=50, **kwargs)


FLOAT32 = ("float32: BLAS may round a row's output differently in a batch of another size (~1e-7 "
           "relative), over these checks' 1e-7 tolerance for regression outputs of size ~5 (the "
           "classifier's probabilities pass: they are below 1); float64, the default, passes them")
CHECKED = [small(cls, device=device) for cls in (DNNClassifier, DNNRegressor) for device in ("numpy", "cpu")]
CHECKED += [small(cls, device="numpy", dtype="float32") for cls in (DNNClassifier, DNNRegressor)]


def expected_failures(estimator):
    if estimator.dtype == "float32" and isinstance(estimator, DNNRegressor):
        return {"check_methods_subset_invariance": FLOAT32, "check_methods_sample_order_invariance": FLOAT32}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check, monkeypatch):
    if getattr(check, "func", check).__name__.startswith("check_array_api"):
        # The array-API check skips itself unless SCIPY_ARRAY_API=1 (it is read at call time); for
        # an estimator without array-API support it runs with NumPy inputs and dispatch switched on.
        monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


# --- data -------------------------------------------------------------------------------------------
def blobs(n_classes=2, m=90, seed=0):
    """Well separated, standardized blobs: X (m, 3), class ids y (m,)."""
    X, y = make_blobs(n_samples=m, n_features=3, centers=n_classes, cluster_std=0.6, random_state=seed)
    return StandardScaler().fit_transform(X), y


def regression(m=80, n_targets=None, seed=0):
    """X (m, 4), y = X·w + 0.3·sin(X0) (m,) or (m, n_targets), no noise."""
    rng = np.random.RandomState(seed)
    X = rng.randn(m, 4)
    w = rng.randn(4, n_targets or 1)
    y = X @ w + 0.3 * np.sin(X[:, :1])
    return X, (y.ravel() if n_targets is None else y)


# --- the layout and the output layer, against the float64 oracle -------------------------------------
def test_binary_probabilities_are_the_sigmoid_output_of_the_course_layout():
    X, y = blobs(2)
    clf = DNNClassifier(hidden_layer_sizes=(5, 3), hidden_activation="tanh", epochs=5, device="numpy",
                        random_state=0).fit(X, y)
    net = clf.network_
    assert net.layer_dims == [3, 5, 3, 1] and net.loss.name == "bce"
    params = net.parameters
    assert params["W1"].shape == (5, 3)                       # W1 (n1, n_features): X.T goes in
    _, As = oracle.forward(params, X.T, ["tanh", "tanh", "sigmoid"])
    P = clf.predict_proba(X)
    assert P.shape == (90, 2) and P.dtype == np.float64
    assert_allclose(P[:, 1], As[-1][0], rtol=1e-10)
    assert_allclose(P[:, 0], 1 - As[-1][0], rtol=1e-10, atol=1e-15)
    assert_array_equal(clf.predict(X), (As[-1][0] > 0.5).astype(int))
    assert_allclose(clf.predict_log_proba(X), np.log(P))


def test_multiclass_probabilities_are_the_softmax_output_transposed():
    X, y = blobs(4)
    clf = DNNClassifier(hidden_layer_sizes=(6,), epochs=5, device="numpy", random_state=0).fit(X, y)
    assert clf.network_.layer_dims == [3, 6, 4] and clf.network_.loss.name == "ce"
    _, As = oracle.forward(clf.network_.parameters, X.T, ["relu", "softmax"])
    P = clf.predict_proba(X)
    assert P.shape == (90, 4)
    assert_allclose(P, As[-1].T, rtol=1e-10)
    assert_array_equal(clf.predict(X), np.argmax(As[-1], axis=0))


@pytest.mark.parametrize("n_targets", [None, 1, 3], ids=["y-1d", "y-n-by-1", "y-n-by-3"])
def test_regressor_is_a_linear_output_with_the_shape_of_y(n_targets):
    X, y = regression(n_targets=n_targets)
    reg = DNNRegressor(hidden_layer_sizes=(16,), epochs=300, learning_rate=0.01, device="numpy",
                       random_state=0).fit(X, y)
    k = n_targets or 1
    assert reg.network_.layer_dims == [4, 16, k] and reg.network_.loss.name == "mse"
    assert reg.n_outputs_ == k
    _, As = oracle.forward(reg.network_.parameters, X.T, ["relu", "linear"])
    pred = reg.predict(X)
    assert pred.shape == y.shape and pred.dtype == np.float64
    assert_allclose(pred.reshape(len(X), k), As[-1].T, rtol=1e-10)
    assert reg.score(X, y) > 0.97


# --- labels of any type ---------------------------------------------------------------------------------
LABELS = {"ints": [-3, 7, 40], "strings": ["ant", "bee", "cat"], "bools": [False, True],
          "floats": [-1.0, 2.0, 10.0]}
CASES = [(kind, n) for kind, labels in LABELS.items() for n in (2, 3) if n <= len(labels)]


@pytest.mark.parametrize("kind,n_classes", CASES, ids=[f"{k}-{n}-classes" for k, n in CASES])
def test_labels_of_any_type_train_like_their_class_ids(kind, n_classes):
    X, ids = blobs(n_classes)
    labels = np.array(LABELS[kind][:n_classes])               # sorted, so label i is class id i
    y = labels[ids]
    clf = DNNClassifier(**FAST).fit(X, y)
    by_id = DNNClassifier(**FAST).fit(X, ids)
    assert_array_equal(clf.classes_, labels)
    assert clf.classes_.dtype == labels.dtype
    assert clf.network_.layer_dims[-1] == (1 if n_classes == 2 else n_classes)
    assert clf.network_.activations[-1].name == ("sigmoid" if n_classes == 2 else "softmax")
    assert_array_equal(clf.predict_proba(X), by_id.predict_proba(X))     # labels only name the ids
    pred = clf.predict(X)
    assert pred.dtype == labels.dtype
    assert_array_equal(pred, labels[by_id.predict(X)])
    assert clf.score(X, y) >= 0.95


def test_labels_in_a_shuffled_order_still_map_to_their_own_probability_columns():
    X, ids = blobs(3)
    names = np.array(["zebra", "ant", "moose"])[ids]           # id 0 -> 'zebra', sorted last
    clf = DNNClassifier(**FAST).fit(X, names)
    assert_array_equal(clf.classes_, ["ant", "moose", "zebra"])
    P = clf.predict_proba(X)
    assert (clf.classes_[P.argmax(axis=1)] == names).mean() >= 0.95
    assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])


def assert_unchanged(estimator, before):
    """The fitted attributes (and private ones) are the very objects they were."""
    state = {k: v for k, v in vars(estimator).items() if k.endswith("_") or k.startswith("_")}
    assert state.keys() == {k for k in before if k.endswith("_") or k.startswith("_")}
    assert all(value is before[key] for key, value in state.items())
    return True


# --- partial_fit ----------------------------------------------------------------------------------------
PARTIAL = dict(hidden_layer_sizes=(6,), batch_size=16, learning_rate=0.05,
               schedule=ExponentialDecay(0.7), keep_prob=0.9, device="numpy", random_state=3)


@pytest.mark.parametrize("task", ["classifier-3-classes", "regressor"])
def test_k_partial_fits_are_one_fit_of_k_epochs(task):
    if task == "regressor":
        (X, y), cls, extra = regression(m=50), DNNRegressor, {}
    else:
        (X, y), cls, extra = blobs(3, m=50), DNNClassifier, {"classes": np.array([0, 1, 2])}
    whole = cls(epochs=4, **PARTIAL).fit(X, y)
    parts = cls(**PARTIAL)
    for k in range(4):
        parts.partial_fit(X, y, **extra)
        assert parts.n_iter_ == k + 1 and len(parts.loss_curve_) == k + 1
    for name, value in whole.network_.parameters.items():
        assert_array_equal(parts.network_.parameters[name], value, err_msg=name)
    assert parts.loss_curve_ == whole.loss_curve_ and len(whole.loss_curve_) == 4


def test_partial_fit_learns_from_batches_that_miss_classes():
    X, y = blobs(3)
    clf = DNNClassifier(hidden_layer_sizes=(8,), learning_rate=0.01, device="numpy", random_state=0)
    for _ in range(10):
        for missing in range(3):                                # each batch lacks one class
            part = y != missing
            clf.partial_fit(X[part], y[part], classes=[0, 1, 2])
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.score(X, y) >= 0.9


def test_partial_fit_errors_leave_the_estimator_as_it_was():
    X, y = blobs(3)
    clf = DNNClassifier(**FAST)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clf.partial_fit(X, y)
    assert not hasattr(clf, "network_")
    clf.partial_fit(X, y, classes=[0, 1, 2])
    before, P = dict(vars(clf)), clf.predict_proba(X)
    with pytest.raises(ValueError, match=r"y contains labels not in classes_ \[0, 1, 2\]: 7$"):
        clf.partial_fit(X[:2], np.array([0, 7]))
    with pytest.raises(ValueError, match=r"classes \[0, 1, 2, 3\] differ from the classes of the first "
                                         r"partial_fit call, \[0, 1, 2\]"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="X has 2 features, but DNNClassifier is expecting 3"):
        clf.partial_fit(X[:, :2], y)
    assert_unchanged(clf, before) and clf.n_iter_ == 1
    assert_array_equal(clf.predict_proba(X), P)
    clf.partial_fit(X, y, classes=[2, 1, 0])                   # the same classes again: fine
    assert clf.n_iter_ == 2

    reg = DNNRegressor(**FAST).partial_fit(*regression())
    with pytest.raises(ValueError, match=r"y has shape \(80, 2\), but this DNNRegressor was fitted on y "
                                         r"of shape \(n_samples,\)"):
        reg.partial_fit(*regression(n_targets=2))


# --- every hyper-parameter reaches the network ----------------------------------------------------
# Arguments of Network / Network.fit that are not constructor arguments of the same name, and why.
DERIVED = {"layer_dims": "hidden_layer_sizes and the data", "output_activation": "the task",
           "loss": "the task", "seed": "random_state", "X": "data", "Y": "data",
           "iterations": "batch_size=None: one full-batch step per epoch",
           "validation_data": "early_stopping + validation_fraction", "report_every": "every epoch",
           "comm": "MPI data parallelism is not for scikit-learn's process pools"}


@pytest.mark.parametrize("cls", [DNNClassifier, DNNRegressor])
def test_every_network_and_fit_argument_is_a_constructor_argument(cls):
    params = set(cls().get_params())
    for function in (fastdnn.Network.__init__, fastdnn.Network.fit):
        names = set(inspect.signature(function).parameters) - {"self"}
        missing = names - params - set(DERIVED)
        assert not missing, f"{function.__qualname__} arguments missing from {cls.__name__}: {missing}"


def test_the_constructor_arguments_go_to_network_and_fit(monkeypatch):
    calls = {}

    class Spy(fastdnn.Network):
        def __init__(self, *args, **kwargs):
            calls["Network"] = (args, kwargs)
            super().__init__(*args, **kwargs)

        def fit(self, X, Y, **kwargs):
            calls["fit"] = (X, Y, kwargs)
            return super().fit(X, Y, **kwargs)

    monkeypatch.setattr(fsk, "Network", Spy)
    X, y = blobs(2, m=40)
    schedule = ExponentialDecay(0.9)
    clf = DNNClassifier(hidden_layer_sizes=[4, 3], hidden_activation=["tanh", "relu"], init="xavier",
                        l2=0.1, keep_prob=[0.9, 0.8], optimizer="momentum", learning_rate=0.05, epochs=3,
                        batch_size=7, shuffle=False, schedule=schedule, early_stopping=True,
                        validation_fraction=0.25, patience=2, device="numpy", dtype="float32",
                        random_state=0, verbose=0, skip=[(0, 2)], projection="pad",
                        batch_norm=[True, False]).fit(X, y)
    args, kwargs = calls["Network"]
    assert args == ([3, 4, 3, 1],)
    assert kwargs == dict(hidden_activation=["tanh", "relu"], output_activation="sigmoid", init="xavier",
                          device="numpy", dtype="float32", seed=kwargs["seed"], l2=0.1, keep_prob=[0.9, 0.8],
                          skip=[(0, 2)], projection="pad", batch_norm=[True, False])
    Xt, Y, fit = calls["fit"]
    assert Xt.shape == (3, 30) and Y.shape == (1, 30)          # 25 % of 40 held out, course layout
    X_val, Y_val = fit.pop("validation_data")
    assert X_val.shape == (3, 10) and Y_val.shape == (1, 10) and Y_val.sum() == 5    # stratified
    assert fit == dict(learning_rate=0.05, epochs=3, batch_size=7, shuffle=False, seed=fit["seed"],
                       optimizer="momentum", schedule=schedule, patience=2, verbose=0)
    net = clf.network_
    assert (net.l2, net.keep_prob, net.optimizer.name, net.dtype, net.backend.name) == (
        0.1, (0.9, 0.8), "momentum", np.float32, "numpy")
    assert [a.name for a in net.activations] == ["tanh", "relu", "sigmoid"]


def test_batch_size_none_is_full_batch_and_a_batch_larger_than_m_is_m(monkeypatch):
    sizes = []
    monkeypatch.setattr(fsk.Network, "fit", lambda self, X, Y, **kw: sizes.append(kw["batch_size"])
                        or fastdnn.History("epoch"), raising=True)
    monkeypatch.setattr(fsk._DNNBase, "_set_fitted", lambda *args: None)
    X, y = blobs(2, m=40)
    for batch_size in (None, 1000, 32):
        DNNClassifier(batch_size=batch_size, device="numpy").fit(X, y)
    assert sizes == [None, 40, 32]


def test_early_stopping_stops_and_keeps_the_best_epoch():
    X, y = blobs(2, m=60)
    y = np.where(np.random.RandomState(0).rand(60) < 0.3, 1 - y, y)       # 30 % flipped labels
    clf = DNNClassifier(hidden_layer_sizes=(32,), learning_rate=0.05, epochs=500, early_stopping=True,
                        patience=3, device="numpy", random_state=0).fit(X, y)
    history = clf.history_
    assert history.stopped_early and clf.n_iter_ < 500
    assert history.best.val_cost == min(history.val_costs)


def test_early_stopping_with_more_classes_than_a_stratified_split_can_hold():
    X, y = make_blobs(n_samples=40, n_features=2, centers=10, random_state=0)
    clf = DNNClassifier(epochs=3, early_stopping=True, device="numpy", random_state=0).fit(X, y)
    assert len(clf.classes_) == 10 and len(clf.history_.val_costs) == 3      # 4 held out, not 10


@pytest.mark.parametrize("sizes,dims", [((), [3, 1]), (5, [3, 5, 1]), ([4, 4, 2], [3, 4, 4, 2, 1])],
                         ids=["no-hidden-layer", "an-int", "a-list"])
def test_hidden_layer_sizes(sizes, dims):
    clf = DNNClassifier(hidden_layer_sizes=sizes, epochs=1, device="numpy").fit(*blobs(2))
    assert clf.network_.layer_dims == dims


def test_verbose_2_prints_the_course_cost_lines(capsys):
    DNNClassifier(epochs=2, verbose=2, device="numpy").fit(*blobs(2))
    assert re.findall(r"Cost after epoch (\d+):", capsys.readouterr().out) == ["0", "1"]


# --- devices and reproducibility ---------------------------------------------------------------------
def test_cuda_falls_back_to_the_cpu_with_the_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)              # no CUDA here, whatever the machine
    with pytest.warns(fastdnn.DeviceFallbackWarning, match=r"device='cuda' unavailable \(cupy: "):
        clf = DNNClassifier(device="cuda", epochs=2).fit(*blobs(2))
    assert clf.network_.device == "cpu"
    with pytest.raises(fastdnn.BackendUnavailableError, match="backend 'cupy' unavailable"):
        DNNClassifier(device="cupy").fit(*blobs(2))


def test_device_names_choose_the_backend():
    X, y = blobs(2)
    assert DNNClassifier(device="numpy", epochs=1).fit(X, y).network_.backend.name == "numpy"
    best_cpu = fastdnn.get_backend("cpu").name
    assert DNNClassifier(device="cpu", epochs=1).fit(X, y).network_.backend.name == best_cpu


def fitted(random_state, device="numpy"):
    """A fit that uses every source of randomness: init, dropout, epoch order, validation split."""
    X, y = blobs(3)
    return DNNClassifier(hidden_layer_sizes=(8, 8), keep_prob=0.8, epochs=5, batch_size=16,
                         early_stopping=True, patience=2, device=device,
                         random_state=random_state).fit(X, y), X


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_random_state_gives_the_same_model_twice_and_another_seed_another(device):
    (a, X), (b, _), (c, _) = fitted(0, device), fitted(0, device), fitted(1, device)
    for name, value in a.network_.parameters.items():
        assert_array_equal(b.network_.parameters[name], value)
    assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    d, _ = fitted(np.random.RandomState(0), device)
    e, _ = fitted(np.random.RandomState(0), device)
    assert_array_equal(d.predict_proba(X), e.predict_proba(X))


# --- scikit-learn's tools -------------------------------------------------------------------------------
def moons_pipeline(**kwargs):
    X, y = make_moons(n_samples=120, noise=0.15, random_state=0)
    model = make_pipeline(StandardScaler(), DNNClassifier(hidden_layer_sizes=(16,), epochs=60,
                                                          learning_rate=0.01, random_state=0, **kwargs))
    return model, X, y


def test_pipeline_and_cross_val_score_in_two_processes_match_one_process():
    model, X, y = moons_pipeline()
    parallel = cross_val_score(model, X, y, cv=3, n_jobs=2)
    assert_array_equal(parallel, cross_val_score(model, X, y, cv=3))
    assert parallel.mean() > 0.9


def test_grid_search_in_two_processes():
    model, X, y = moons_pipeline()
    grid = GridSearchCV(model, {"dnnclassifier__hidden_layer_sizes": [(2,), (16,)],
                                "dnnclassifier__learning_rate": [1e-4, 0.01]}, cv=3, n_jobs=2).fit(X, y)
    assert grid.best_params_ == {"dnnclassifier__hidden_layer_sizes": (16,),
                                 "dnnclassifier__learning_rate": 0.01}
    assert grid.best_estimator_[-1].network_.layer_dims == [2, 16, 1]
    assert grid.score(X, y) > 0.9


def test_fitted_estimators_come_back_from_worker_processes():
    # joblib's worker processes send the fitted estimators back pickled (with cloudpickle, which also
    # takes the numba backend's compiled closures today); same random_state, same model everywhere.
    model, X, y = moons_pipeline()
    results = cross_validate(model, X, y, cv=2, n_jobs=2, return_estimator=True)
    here = cross_validate(model, X, y, cv=2, return_estimator=True)
    for there, local in zip(results["estimator"], here["estimator"]):
        assert_array_equal(there.predict_proba(X), local.predict_proba(X))
    fits = joblib.Parallel(n_jobs=2)(joblib.delayed(clone(model).fit)(X, y) for _ in range(2))
    assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))


def test_clone_gives_an_unfitted_copy_with_the_same_parameters():
    model, X, y = moons_pipeline(device="numpy")
    model.fit(X, y)
    copy_ = clone(model)
    assert copy_[-1].get_params() == model[-1].get_params()
    with pytest.raises(NotFittedError):
        copy_.predict(X)
    assert model.score(X, y) > 0.9                              # the original is still fitted


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copy_predicts_and_trains_on_like_the_original(device, how):
    X, y = blobs(3)
    clf = DNNClassifier(hidden_layer_sizes=(8,), epochs=3, optimizer="adam", device=device,
                        random_state=0).fit(X, y)
    other = pickle.loads(pickle.dumps(clf)) if how == "pickle" else copy.deepcopy(clf)
    assert_array_equal(other.predict_proba(X), clf.predict_proba(X))
    for estimator in (clf, other):
        estimator.partial_fit(X, y)
    assert_array_equal(other.predict_proba(X), clf.predict_proba(X))


# --- errors ------------------------------------------------------------------------------------------
def test_unfitted_estimators_raise_not_fitted():
    for method in ("predict", "predict_proba", "predict_log_proba"):
        with pytest.raises(NotFittedError):
            getattr(DNNClassifier(), method)(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        DNNRegressor().predict(np.zeros((2, 3)))


def test_bad_data_is_a_value_error_naming_it():
    X, y = blobs(2)
    clf = DNNClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but DNNClassifier is expecting 3 features"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        clf.predict(X[:, 0])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.predict(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="DNNClassifier needs at least 2 classes; got 1 class: 'a'$"):
        DNNClassifier(**FAST).fit(X, np.full(len(X), "a"))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        DNNClassifier(**FAST).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        DNNRegressor(**FAST).fit(X, y[:-1])


BAD_PARAMETERS = [
    (dict(hidden_layer_sizes=[4, 0]),
     "hidden_layer_sizes must be positive integers, one per hidden layer; got \\[4, 0\\]"),
    (dict(hidden_layer_sizes="4"), "hidden_layer_sizes must be positive integers"),
    (dict(hidden_layer_sizes=2.5), "hidden_layer_sizes must be positive integers"),
    (dict(batch_size=0), "batch_size must be an integer >= 1 or None; got 0"),
    (dict(batch_size="auto"), "batch_size must be an integer >= 1 or None; got 'auto'"),
    (dict(early_stopping=True, validation_fraction=1.0),
     "validation_fraction must be a number in \\(0, 1\\); got 1.0"),
    (dict(epochs=0), "epochs must be an integer >= 1; got 0"),
    (dict(learning_rate=-1.0), "learning_rate must be a finite number > 0"),
    (dict(optimizer="adamw"), "unknown optimizer 'adamw'; expected one of 'adagrad', 'adam'"),
    (dict(hidden_activation="rleu"), "unknown activation 'rleu'; expected one of"),
    (dict(schedule="cosine"), "unknown schedule 'cosine'; expected one of"),
    (dict(init="glorot"), "unknown initializer 'glorot'|glorot"),
    (dict(dtype="float16"), "dtype must be 'float32' or 'float64'; got float16"),
    (dict(keep_prob=1.5), "keep_prob must be in \\(0, 1\\]"),
    (dict(l2=-1), "l2 must be a finite number >= 0"),
    (dict(device="tpu"), "unknown device 'tpu'; expected one of"),
]


@pytest.mark.parametrize("params,message", BAD_PARAMETERS,
                         ids=[next(iter(p)) + "-" + str(next(iter(p.values()))) for p, _ in BAD_PARAMETERS])
def test_a_bad_parameter_raises_at_fit_and_changes_nothing(params, message):
    X, y = blobs(2)
    clf = DNNClassifier(**FAST).fit(X, y)
    before, P = dict(vars(clf)), clf.predict_proba(X)
    clf.set_params(**params)                                    # scikit-learn checks nothing here
    with pytest.raises(ValueError, match=message):
        clf.fit(X[:, :2], y)                                    # other data: n_features_in_ too
    assert_unchanged(clf, before)
    assert_array_equal(clf.predict_proba(X), P)


# --- imports and the README ----------------------------------------------------------------------
def run_python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_import_fastdnn_does_not_import_sklearn():
    result = run_python("import sys, fastdnn; print('sklearn' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_sklearn_the_error_says_what_to_install():
    result = run_python("import sys; sys.modules['sklearn'] = None; import fastdnn.sklearn")
    assert result.returncode != 0
    assert "fastdnn.sklearn needs scikit-learn >= 1.6; install it with pip install \"fastdnn[sklearn]\"" \
        in result.stderr


def test_the_readme_example_runs(tmp_path, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        section = f.read().split("### scikit-learn\n", 1)[1].split("\n### ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code) == 1
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    score = float(capsys.readouterr().out.split()[0])
    assert score > 0.93
