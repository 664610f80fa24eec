"""Data-parallel training over MPI (mpi4py): each rank holds a shard of the examples (columns).

Rank r computes the gradient of its own mean cost J_r over its m_r examples of a batch of M; one
all-reduce per step sums [(m_r/M) dθ_r, (m_r/M) J_r] over the ranks, which is exactly the batch's
dθ and J, so every rank applies the same update to the same parameters (broadcast from rank 0 when
training starts). L2 terms are added after the sum, with M. The all-reduced buffer is the flat
gradient plus one entry: (P + 1) · itemsize bytes per step.

Batch normalization is synchronized: a normalized layer's μ, σ² are the whole batch's (two all-reduces
of n_l numbers in the forward), and its dβ, dγ too before dZ (one of 2 n_l), so every rank computes
exactly the one-process gradient and the same running statistics.

CuPy buffers go to MPI directly when the MPI library is CUDA-aware (see ``cuda_aware``), and through
a pinned host buffer otherwise.
"""
import hashlib
import os
import sys
import traceback
import warnings

import numpy as np

from .errors import DistributedError, TrainingDivergedError

# Environment settings that switch on the GPU support of common MPI libraries (their documentation):
# Open MPI, HPE Cray MPICH, MVAPICH2, Intel MPI.
CUDA_AWARE_SETTINGS = {"OMPI_MCA_opal_cuda_support": "true", "MPICH_GPU_SUPPORT_ENABLED": "1",
                       "MV2_USE_CUDA": "1", "I_MPI_OFFLOAD": "1"}
# set by mpiexec (MPICH's Hydra, Open MPI, PMIx launchers) in every rank's environment
MPI_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


def mpi_world():
    """MPI.COMM_WORLD when this process was started by an MPI launcher with more than one rank and
    mpi4py works; None otherwise (MPI is not initialized then)."""
    if not any(v in os.environ for v in MPI_LAUNCH_VARIABLES):
        return None
    try:
        from mpi4py import MPI
    except Exception:                 # no mpi4py, or no MPI library for it
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def cuda_aware(environ=os.environ):
    """Whether device buffers may go to MPI directly: FASTDNN_MPI_CUDA_AWARE=1/0 decides; otherwise
    yes when one of CUDA_AWARE_SETTINGS is set as given, as the MPI library then takes GPU buffers."""
    forced = environ.get("FASTDNN_MPI_CUDA_AWARE")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes")
    return any(environ.get(k, "").strip().lower() == v for k, v in CUDA_AWARE_SETTINGS.items())


def shard(X, Y, comm):
    """This rank's columns of X (n0, M) and Y (nL, M): near-equal consecutive shards, as
    np.array_split makes them (for data that every rank can read whole)."""
    bounds = np.cumsum([0] + _split_sizes(X.shape[1], comm.Get_size()))
    r = comm.Get_rank()
    return X[:, bounds[r]:bounds[r + 1]], Y[..., bounds[r]:bounds[r + 1]]


def local_rank(comm):
    """This rank's index among the ranks on its node (to pick its GPU: device=f"cuda:{i % gpus}")."""
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def batches(shard_sizes, rank, batch_size):
    """[(start, stop, M_k)] of rank's (permuted) examples for each global batch k: batch k covers
    positions [k B, min((k+1) B, M)) of all M examples, and rank r takes the same fraction of its
    m_r, [⌊k B m_r / M⌋, ⌊min((k+1) B, M) m_r / M⌋); M_k sums those over the ranks. On one rank
    these are plain consecutive batches of B, the last smaller."""
    M, B = sum(shard_sizes), batch_size
    bounds = [(k, min(k + B, M)) for k in range(0, M, B)]
    pieces = [[e * m // M - s * m // M for s, e in bounds] for m in shard_sizes]
    for r, sizes in enumerate(pieces):
        if 0 in sizes:
            raise DistributedError(f"rank {r} holds {shard_sizes[r]} of the {M} examples: its part of "
                                   f"some batches of {B} would be empty (use a larger batch_size or "
                                   "shards closer in size)")
    m = shard_sizes[rank]
    return [(s * m // M, e * m // M, sum(p[k] for p in pieces)) for k, (s, e) in enumerate(bounds)]


def _split_sizes(m, parts):
    """Sizes of np.array_split(range(m), parts): the first m % parts get one more."""
    return [m // parts + (1 if i < m % parts else 0) for i in range(parts)]


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


class DataParallel:
    """The MPI side of ``Network.fit(..., comm=)``: agreement on errors, shard sizes, the broadcast
    of the parameters, the per-step all-reduce, and aborting the job when one rank fails alone."""

    def __init__(self, comm, engine):
        from mpi4py import MPI
        self.MPI, self.comm, self.engine = MPI, comm, engine
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.staged = engine.backend.device.startswith("cuda") and not cuda_aware()
        self.host = {}            # (shape, dtype) -> pinned host copy of a reduced buffer when staged
        self.m_total = self.shard_sizes = None
        self.share = 1.0          # this step's m_r / M (set by the engine before each step)

    # --- collective agreement ----------------------------------------------------------------
    def agree(self, fn):
        """fn() on every rank; when it raises on any rank, every rank raises: that rank's own error
        there, DistributedError naming the first failing rank elsewhere (no rank is left waiting)."""
        try:
            result, error = fn(), None
        except Exception as exc:
            result, error = None, exc
        failed = [(r, e) for r, e in enumerate(self.comm.allgather(None if error is None else _describe(error))) if e]
        if error is not None:
            raise error
        if failed:
            r, message = failed[0]
            raise DistributedError(f"rank {r} of {self.size} failed: {message}")
        return result

    def start(self, m_local, plan):
        """Check that every rank trains the same network with the same plan (steps, batches, reports;
        otherwise some rank would wait forever), gather the shard sizes, and copy rank 0's
        parameters, optimizer state and counters to every rank."""
        engine = self.engine
        signature = repr((engine.layer_dims, [a.name for a in engine.activations], engine.loss.name,
                          engine.dtype.name, engine.optimizer, engine.l2, engine.keep_prob, engine.skips,
                          engine.projection, engine.batch_norm, plan))
        gathered = self.comm.allgather((signature, m_local))
        for r, (other, _) in enumerate(gathered):
            if other != signature:
                raise DistributedError(f"rank {r}'s network or fit arguments differ from rank {self.rank}'s:\n"
                                       f"  rank {r}: {other}\n  rank {self.rank}: {signature}")
        self.shard_sizes = [m for _, m in gathered]
        self.m_total = sum(self.shard_sizes)
        for buffer in [engine.theta, *engine.states]:
            self._collective(buffer, lambda b: self.comm.Bcast(b, root=0))
        engine.t, engine.iteration, engine.epoch = self.comm.bcast((engine.t, engine.iteration, engine.epoch),
                                                                   root=0)
        if self.rank:                 # dropout masks: one independent stream per rank
            engine.rng = np.random.Generator(engine.rng.bit_generator.jumped(self.rank))

    def batches(self, batch_size):
        """This rank's parts of the global batches (see ``batches``)."""
        return batches(self.shard_sizes, self.rank, batch_size)

    # --- per step -----------------------------------------------------------------------------
    def all_reduce(self, buffer, cost, share):
        """buffer = Σ_ranks share_r · [dθ_r, J_r] in place, in one MPI call; returns the summed J."""
        buffer[-1] = cost
        buffer *= share
        self._sum(buffer)
        return self.engine.backend.scalar(buffer[-1])

    def batch_stats(self, mu, var):
        """μ = Σ_r s_r μ_r and σ² = Σ_r s_r (σ²_r + (μ_r − μ)²) in place, from this rank's μ_r, σ²_r (n_l, 1)
        over its m_r columns of the batch's M (s_r = m_r / M = ``share``): the batch's own statistics."""
        mu_r = mu.copy()
        mu *= self.share
        self._sum(mu)
        var += (mu_r - mu) ** 2
        var *= self.share
        self._sum(var)

    def batch_norm_sums(self, dgamma, dbeta):
        """dγ, dβ (n_l, 1) = Σ_r s_r · (rank r's) in place, in one MPI call: the whole batch's, which the
        backward through μ and σ² needs (this rank's are sums over its columns of dZ̃ for its own J_r)."""
        xp, n = self.engine.backend.xp, dgamma.shape[0]
        both = xp.concatenate([dgamma, dbeta]) * self.share
        self._sum(both)
        dgamma[...], dbeta[...] = both[:n], both[n:]

    def _sum(self, buffer):
        """buffer = its sum over the ranks, in place."""
        self._collective(buffer, lambda b: self.comm.Allreduce(self.MPI.IN_PLACE, b, op=self.MPI.SUM))

    def mean(self, values, m):
        """The mean over every rank's examples of per-rank means (None stays None), and the total m."""
        present = [v for v in values if v is not None]
        sums = self.comm.allreduce(np.array([m * v for v in present] + [m], dtype=np.float64))
        means = iter(sums[:-1] / sums[-1])
        return [None if v is None else float(next(means)) for v in values], int(sums[-1])

    def _collective(self, buffer, call):
        """call(buffer) on the device buffer itself (host arrays, CUDA-aware MPI) or on a pinned
        host copy of it, copied back afterwards."""
        backend = self.engine.backend
        if not self.staged:
            backend.synchronize()     # MPI reads device memory outside the stream's order
            call(buffer)
            return
        key = (buffer.shape, buffer.dtype)
        if key not in self.host:
            self.host[key] = backend.host_buffer(buffer.shape, buffer.dtype)
        host = self.host[key]
        backend.copy_to_host(buffer, host)
        call(host)
        backend.copy_from_host(host, buffer)

    # --- failures -----------------------------------------------------------------------------
    def run(self, loop):
        """loop.run(); an error on this rank alone (anything but the all-reduced cost's
        divergence or a DistributedError, which every rank raises alike) aborts the whole job
        after printing it. The engine steps data-parallel only while it runs."""
        self.engine.set_parallel(self)
        try:
            history = loop.run()
            self.check_same_parameters()
            return history
        except (TrainingDivergedError, DistributedError):      # raised on every rank alike
            raise
        except BaseException as exc:
            if self.size > 1:
                self.abort(exc)
            raise
        finally:
            self.engine.set_parallel(None)

    def check_same_parameters(self):
        """Every rank should end with the same parameters, bit for bit; MPI does not promise an
        all-reduce gives every rank the same bits, so compare digests once and, if they differ,
        warn and give every rank rank 0's parameters."""
        theta = self.engine.theta
        digest = hashlib.sha256(self.engine.backend.to_numpy(theta).tobytes()).hexdigest()
        digests = self.comm.allgather(digest)
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            warnings.warn(f"parameters of rank(s) {differ} drifted from rank 0's during data-parallel "
                          "training (the MPI all-reduce did not give every rank the same bits); every "
                          "rank now has rank 0's", RuntimeWarning, stacklevel=4)
            self._collective(theta, lambda b: self.comm.Bcast(b, root=0))

    def abort(self, exc):
        """Print this rank's error and end every rank of the job (MPI_Abort), so none waits forever."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"fastdnn: rank {self.rank} of {self.size} failed during data-parallel "
                         f"training; aborting the MPI job.\n{text}")
        sys.stderr.flush()
        self.comm.Abort(1)
