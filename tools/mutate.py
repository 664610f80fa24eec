"""A mutation run of the test suite: apply each hand-written mutant below, one at a time, run the tests
it names, and count it killed when they fail (or time out), survived when they pass.

    python tools/mutate.py                 # every mutant; prints one line each, the score and the time
    python tools/mutate.py --only engine   # mutants whose file or text contains 'engine'
    python tools/mutate.py --list          # the mutants, checked to apply (each original text found once)

Mutants are applied to a copy of the checkout in a temporary folder (fastdnn/, tests/, tools/ and a
link to ../shared), never to the checkout itself, with no bytecode written (so a mutated module is
always read from its source) and, for the modules Numba compiles from, an empty Numba cache. Each
mutant is one line: M(file, original text, mutated text, the tests to run as pytest arguments);
the original text must occur exactly once in the file. Exit status 1 when the score is below
--min-score (95 by default).
"""
import argparse
import collections
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Mutant = collections.namedtuple("Mutant", "file original mutated tests")


def M(file, original, mutated, tests):
    return Mutant("fastdnn/" + file, original, mutated, tests)


A, MU = "tests/test_activations_losses.py", "tests/test_mutants.py"
OPS, CPU_K = "tests/test_ops.py", "tests/test_cupy_kernels_cpu.py"
OPT = "tests/test_optimizers_minibatch.py"
NB, ST, NL = "tests/test_numba_backend.py", "tests/test_state.py", "tests/test_nothing_lost.py"
ENGINE = f"{NL} -k 'diverg or last_step or first_step or restores'"
ERR, NET, DIST = "tests/test_errors.py", "tests/test_network.py", "tests/test_distributed.py"
NUMBA_SOURCES = ("activations.py", "losses.py", "optimizers.py", "backends/")   # compiled by Numba

MUTANTS = [
    # --- math: activations ---------------------------------------------------------------------------
    M("activations.py", "xp.where(Z >= 0, r, e * r)", "xp.where(Z >= 0, r, e)", f"{OPS} -k forward"),
    M("activations.py", "xp.multiply(dA, A * (1 - A), out=out)", "xp.multiply(dA, A * (1 + A), out=out)", f"{OPS} -k backward"),
    M("activations.py", "return a * (one - a)", "return a * (one + a)", f"{A} -k scalar"),
    M("activations.py", "xp.multiply(dA, 1 - A * A, out=out)", "xp.multiply(dA, 1 - A, out=out)", f"{OPS} -k backward"),
    M("activations.py", "return one - a * a", "return one - a", f"{A} -k scalar"),
    M("activations.py", "xp.multiply(dA, Z > 0, out=out)", "xp.multiply(dA, Z >= 0, out=out)", A),
    M("activations.py", "return one if z > zero else zero", "return one if z >= zero else zero", f"{A} {MU} -k relu"),
    M("activations.py", "xp.where(Z > 0, 1.0, self.slope)", "xp.where(Z > 0, 1.0, 0.01)", f"{MU} -k leaky"),
    M("activations.py", "return one if z > zero else slope", "return one if z > zero else ftype(0.01)", f"{MU} -k leaky"),
    M("activations.py", "xp.where(Z > 0, Z, self.slope * Z)", "xp.where(Z > 0, Z, 0.01 * Z)", f"{A} -k leaky"),
    M("activations.py", "xp.subtract(Z, Z.max(axis=0, keepdims=True), out=out)", "xp.multiply(Z, 1, out=out)", A),
    M("activations.py", "xp.multiply(A, dA - s, out=out)", "xp.multiply(A, dA + s, out=out)", f"{OPS} -k backward"),
    # --- math: losses --------------------------------------------------------------------------------
    M("losses.py", "(xp.maximum(Z, 0) - Z * Y + ", "(xp.maximum(Z, 0) + Z * Y + ", f"{OPS} -k output_layer"),
    M("losses.py", "(z if z > zero else zero) - z * y +", "(z if z > zero else zero) - z +", f"{OPS} -k output"),
    M("losses.py", "lse = zmax + xp.log(", "lse = xp.log(", A),
    M("losses.py", "return 0.5 * (D * D).sum()", "return (D * D).sum()", f"{OPS} -k output_layer"),
    M("losses.py", "return half * d * d", "return d * d", f"{OPS} -k output"),
    M("losses.py", "∂L/∂A = A - Y. (n_L, m) -> (n_L, m).\"\"\"\n        return A - Y",
      "∂L/∂A = A - Y. (n_L, m) -> (n_L, m).\"\"\"\n        return Y - A", f"{OPS} -k output"),
    # --- math: optimizers and schedules ----------------------------------------------------------------
    M("optimizers.py", "return xp.subtract(theta, lr * dtheta, out=out)", "return xp.add(theta, lr * dtheta, out=out)", f"{OPT} -k update_matches"),
    M("optimizers.py", "v += (1 - self.beta) * dtheta", "v += self.beta * dtheta", f"{OPT} -k update_matches"),
    M("optimizers.py", "v = beta * v + (one - beta) * g", "v = beta * v + g", f"{OPT} -k update_matches"),
    M("optimizers.py", "s += (1 - self.beta) * dtheta * dtheta", "s += (1 - self.beta) * dtheta", f"{OPT} -k update_matches"),
    M("optimizers.py", "lr * g / (math.sqrt(s) + eps), s, s2", "lr * g / (s + eps), s, s2", f"{OPT} -k update_matches"),
    M("optimizers.py", "return 1.0 / (1.0 - b1 ** t), 1.0 / (1.0 - b2 ** t)", "return 1.0, 1.0 / (1.0 - b2 ** t)", f"{OPT} -k update_matches"),
    M("optimizers.py", "(xp.sqrt(s * c2) + self.epsilon)", "xp.sqrt(s * c2 + self.epsilon)", f"{OPT} -k update_matches"),
    M("optimizers.py", "s = b2 * s + (one - b2) * g * g", "s = b2 * s + (one - b2) * g", f"{OPT} -k update_matches"),
    M("optimizers.py", "v = b1 * v + (one - b1) * g", "v = b1 * v + (one - b2) * g", f"{OPT} -k update_matches"),
    M("optimizers.py", "xp.add(states[0], dtheta * dtheta, out=states_out[0])", "xp.add(states[0], dtheta, out=states_out[0])", f"{OPT} -k update_matches"),
    M("optimizers.py", "G = G + g * g", "G = g * g", f"{OPT} -k update_matches"),
    M("optimizers.py", "if not 0 <= value < 1:", "if not 0 <= value <= 1:", f"{OPT} -k bad_optimizer"),
    M("schedules.py", "self.decay_rate ** (epoch // self.time_interval)", "self.decay_rate ** epoch", f"{MU} -k decay"),
    M("schedules.py", "self.decay_rate * (epoch // self.time_interval))", "self.decay_rate * epoch)", "tests/test_training_loop.py"),
    M("schedules.py", "self.factor ** (epoch // self.step_size)", "self.factor ** (epoch // (self.step_size + 1))", "tests/test_training_loop.py"),
    # --- the numba kernels ---------------------------------------------------------------------------
    M("backends/_numba_kernels.py", "e = np.exp(Z[i, j] - zmax)", "e = np.exp(Z[i, j])", f"{MU} -k softmax"),
    M("backends/_numba_kernels.py", "if a > tiny else _log_softmax(Z, i, j)", "if a > tiny else np.log(np.float64(a))", f"{MU} -k softmax"),
    M("backends/_numba_kernels.py", "return np.float64(Z[i, j]) - zmax - np.log(s)", "return np.float64(Z[i, j]) - np.log(s)", f"{MU} -k softmax"),
    M("backends/_numba_kernels.py", "d = dA[i, j] * dg(Z[i, j], A[i, j])", "d = dA[i, j]", f"{OPS} -k numba"),
    M("backends/_numba_kernels.py", "d = d * dg(z, a)", "d = d", f"{OPS} -k numba"),
    M("backends/_numba_kernels.py", "dZ[i, j] = d * inv_m", "dZ[i, j] = d", f"{OPS} -k numba"),
    M("backends/_numba_kernels.py", "z = Z[i, j] + bi", "z = Z[i, j]", f"{OPS} -k numba"),
    M("backends/_numba_kernels.py", "dW[i, j] += c * W[i, j]", "dW[i, j] += W[i, j]", "tests/test_regularization.py -k l2_cost"),
    M("backends/_numba_kernels.py", "c1, c2 = corrections(counters[c, 0] + 1)", "c1, c2 = corrections(counters[c, 0] + 2)", f"{OPT} -k trains_the_same"),
    M("backends/_numba_kernels.py", "counters[o, 1] += 1", "counters[o, 1] += 0", f"{NL} -k restores"),
    M("backends/_numba_kernels.py", "s += dZ[i, j] * A[p, j]", "s += dZ[i, j] * A[p, j] * 0.5", f"{NB} -k 100_steps"),
    M("backends/_numba_kernels.py", "TRANS if trans_a else NO_TRANS", "NO_TRANS", f"{NB} -k blas_gemm"),
    M("backends/_numba_kernels.py", "out[p] = theta[p] - learning_rate * dtheta[p]", "out[p] = theta[p] - dtheta[p]", f"{NB} -k 100_steps"),
    # --- the CuPy kernels' bodies, compiled for the CPU ------------------------------------------------
    M("backends/_cupy_kernels.py", "{exp}(Z[k] - zmax);", "{exp}(Z[k]);", CPU_K),
    M("backends/_cupy_kernels.py", "(a > tiny ? log((double)a) : fdnn_log_softmax_{s}(Z, i, j, n, m))", "log((double)a)", CPU_K),
    M("backends/_cupy_kernels.py", "const {T} d = dA[row + j] * {dg.name}(Z[row + j], A[row + j]);", "const {T} d = dA[row + j];", CPU_K),
    M("backends/_cupy_kernels.py", "if (!isfinite(*cost)) {{", "if (false) {{", CPU_K),
    M("backends/_cupy_kernels.py", "*halted_at = iteration + 1;", "*halted_at = iteration;", CPU_K),
    M("backends/_cupy_kernels.py", "dW[p] += c * W[p];", "dW[p] += W[p];", CPU_K),
    M("backends/_cupy_kernels.py", "sum += w * w;", "sum += w;", CPU_K),
    M("backends/_cupy_kernels.py", "D[p] = D[p] < keep_prob ? scale", "D[p] = D[p] > keep_prob ? scale", CPU_K),
    M("backends/_cupy_kernels.py", "*out = ({T})(sum * (double)scale);", "*out = ({T})sum;", CPU_K),
    M("backends/_cupy_kernels.py", "sum += partials[(long long)i * count + c];", "sum += partials[(long long)i * count];", CPU_K),
    # --- files -----------------------------------------------------------------------------------------
    M("state.py", "if config.get(\"format\") != FORMAT:", "if False:", f"{ST} {MU} -k load"),
    M("state.py", "if a.shape != shape and not", "if False and a.shape != shape and not", f"{ST} {MU} -k state"),
    M("state.py", "if not np.isfinite(a).all():", "if False:", ST),
    M("state.py", "if name in nonnegative and (a < 0).any():", "if False:", ST),
    M("state.py", "if config[\"optimizer_step\"] > config[\"iteration\"]:", "if config[\"optimizer_step\"] > config[\"iteration\"] + 1:", ST),
    M("state.py", "iteration=engine.iteration, epoch=engine.epoch", "iteration=engine.t, epoch=engine.epoch", f"{ST} {MU} -k \'state or saved\'"),
    M("io.py", "if found != shape and not (name[0] == \"b\" and found == shape[:1]):", "if False:", ST),
    M("io.py", "if info.file_size > limit:", "if False:", ST),
    M("io.py", "if unknown:", "if False:", ST),
    M("io.py", "return stat.S_IMODE(os.stat(target).st_mode)", "return 0o600", ST),
    M("io.py", "os.replace(tmp, target)", "os.replace(tmp, path)", ST),
    M("io.py", "if header.dtype.kind != \"U\" or header.shape != ():", "if False:", f"{ST} {MU} -k header"),
    # --- the engine: divergence, commit, L2 --------------------------------------------------------------
    M("engine.py", "self._counters[s, ITERATION] += 1", "pass", ENGINE),
    M("engine.py", "and previous >= self._call_start", "", ENGINE),
    M("engine.py", "self._current[0] = 1 - self._slot()", "pass", ENGINE),
    M("engine.py", "self._diverged(math.nan)", "return", ENGINE),
    M("engine.py", "self._call_start = self.iteration", "self._call_start = 0", ENGINE),
    M("engine.py", "self.l2 / (2 * m) * sum(", "self.l2 / m * sum(", "tests/test_regularization.py -k l2_cost"),
    M("engine.py", "self.backend.add_scaled(dW, W, self.l2 / m)", "self.backend.add_scaled(dW, W, self.l2 / (2 * m))", "tests/test_regularization.py -k l2_cost"),
    # --- parallel code --------------------------------------------------------------------------------
    M("distributed.py", "engine.rng = np.random.Generator(engine.rng.bit_generator.jumped(self.rank))", "pass", f"{MU} -k dropout"),
    M("distributed.py", "(1 if i < m % parts else 0)", "(1 if i <= m % parts else 0)", f"{DIST} -k shards"),
    M("distributed.py", "sum(p[k] for p in pieces)) for k", "B) for k", f"{DIST} -k shards"),
    M("distributed.py", "if 0 in sizes:", "if False:", f"{DIST} -k shards"),
    M("distributed.py", "environ.get(k, \"\").strip().lower() == v for", "environ.get(k, \"\") == v for", f"{DIST} -k cuda_aware"),
    M("distributed.py", "return forced.strip().lower() in (\"1\", \"true\", \"yes\")", "return True", f"{DIST} -k cuda_aware"),
    M("distributed.py", "buffer *= share", "buffer *= 1", f"{DIST} -k minibatches"),
    M("distributed.py", "if len(set(digests)) > 1:", "if False:", f"{DIST} -k drift"),
    # --- input checks ------------------------------------------------------------------------------
    M("_checks.py", "x = backend.asarray(x, dtype=dtype)", "x = backend.asarray(x)", "tests/test_properties.py -k 'calls and numba'"),
    M("_checks.py", "if X.ndim != 2 or X.shape[0] != n_x:", "if X.ndim != 2:", ERR),
    M("_checks.py", "if loss.name == \"bce\" and not np.isin(Yh, (0, 1)).all():", "if False:", ERR),
    M("_checks.py", "if loss.name == \"ce\" and not np.allclose(Yh.sum(axis=0), 1):", "if False:", f"{NL} -k bad_arguments"),
    M("_checks.py", "ids.min() >= 0 and ids.max() < n_L", "ids.min() >= 0 and ids.max() <= n_L", ERR),
    M("_checks.py", "if x.size == 0 or (np.isfinite(", "if True or (np.isfinite(", ERR),
    M("_checks.py", "if tuple(np.shape(b)) not in ((n, 1), (n,)):", "if False:", ERR),
    M("_checks.py", "if kind not in \"biuf\":", "if False:", ERR),
    # --- gradient checking and the course's API --------------------------------------------------------
    M("gradcheck.py", "device=net.backend, dtype=np.float64)", "device=net.backend, dtype=net.dtype)", f"{MU} -k gradient"),
    M("gradcheck.py", "approx[k] = (plus - minus) / (2 * epsilon)", "approx[k] = (plus - minus) / epsilon", f"{NET} -k gradient_check"),
    M("course.py", "str(float(xp.sum((p == y) / m)))", "str(float(xp.sum((p == y) / (m + 1))))", "tests/test_course.py -k predict"),
]


def copy_checkout(where):
    """fastdnn/, tests/, tools/ and pyproject.toml into where/repo, ../shared linked beside it."""
    repo = os.path.join(where, "repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fastdnn", "tests", "tools"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(repo, name), ignore=ignore)
    shutil.copy2(os.path.join(ROOT, "pyproject.toml"), repo)
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):
        os.symlink(shared, os.path.join(where, "shared"))
    return repo


def check(mutant, repo):
    with open(os.path.join(repo, mutant.file), encoding="utf-8") as f:
        text = f.read()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"{mutant.file}: {mutant.original!r} occurs {count} times (must be once)")
    return text


def run(mutant, repo, where, timeout):
    """(outcome, seconds): 'killed by <the first failing test>', 'timeout' (counted killed), 'survived',
    or 'error ...' (the tests could not run: not counted)."""
    path = os.path.join(repo, mutant.file)
    text = check(mutant, repo)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    fresh = any(s in mutant.file for s in NUMBA_SOURCES)
    env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(dir=where) if fresh else os.path.join(where, "numba-cache")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(mutant.original, mutant.mutated))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0",
                               *shlex.split(mutant.tests)], cwd=repo, env=env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        failed = [line.split(" - ")[0][len("FAILED "):] for line in proc.stdout.splitlines()
                  if line.startswith(("FAILED ", "ERROR "))]
        outcome = "survived" if proc.returncode == 0 else f"killed by {failed[0] if failed else '?'}"
        if proc.returncode not in (0, 1):      # 2: interrupted/collection error, 5: nothing selected
            outcome = f"error (pytest exit {proc.returncode}): {proc.stdout.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        outcome = "timeout"
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        if fresh:
            shutil.rmtree(env["NUMBA_CACHE_DIR"], ignore_errors=True)
    return outcome, time.perf_counter() - start


def describe(mutant):
    short = lambda s: " ".join(s.split())[:60]
    return f"{mutant.file[len('fastdnn/'):]}: {short(mutant.original)!r} -> {short(mutant.mutated)!r}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run the mutants whose file or original text "
                        "contains this (repeatable), or whose number (as --list shows) it is")
    parser.add_argument("--list", action="store_true", help="list the mutants (checked) and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant (default 300)")
    parser.add_argument("--min-score", type=float, default=95.0, help="exit 1 below this score (%%)")
    args = parser.parse_args(argv)
    mutants = [(i, m) for i, m in enumerate(MUTANTS, 1) if not args.only
               or any(o == str(i) or o in m.file or o in m.original for o in args.only)]
    where = tempfile.mkdtemp(prefix="fastdnn-mutate-")
    try:
        repo = copy_checkout(where)
        for _, m in mutants:
            check(m, repo)
        if args.list:
            for i, m in mutants:
                print(f"{i:3d} {describe(m)}  [{m.tests}]")
            return 0
        start, outcomes = time.perf_counter(), []
        for i, m in mutants:
            outcome, seconds = run(m, repo, where, args.timeout)
            outcomes.append(outcome)
            verdict, _, detail = outcome.partition(" ")
            print(f"{i:3d}/{len(MUTANTS)} {verdict.upper():9s} {seconds:6.1f}s  {describe(m)}"
                  + (f"\n{'':17s}{detail}" if detail else ""), flush=True)
        killed = sum(o.startswith(("killed", "timeout")) for o in outcomes)
        errors = sum(o.startswith("error") for o in outcomes)
        score = 100.0 * killed / max(len(mutants) - errors, 1)
        print(f"\n{killed} killed, {outcomes.count('survived')} survived, {errors} errors of {len(mutants)} "
              f"mutants: score {score:.1f} % in {time.perf_counter() - start:.0f} s")
        return 0 if score >= args.min_score and not errors else 1
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
