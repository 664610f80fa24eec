"""Where things live in the flat buffers: parameters laid out W1, b1, W2, b2, ..., and the workspace's
Z / A / dA buffers laid out layer after layer."""
import numpy as np


def flat_layout(layer_dims):
    """(dims, pofs): int64 layer sizes and the offset of each layer's W in the flat θ (b[l] follows W[l])."""
    dims = np.asarray(layer_dims, dtype=np.int64)
    pofs = np.concatenate([[0], np.cumsum(dims[1:] * dims[:-1] + dims[1:])]).astype(np.int64)
    return dims, pofs


def workspace_offsets(layer_dims, m):
    """int64 offsets of layer l's (n_l, m) block in a flat workspace buffer; the last is the total size."""
    return np.concatenate([[0], np.cumsum(np.asarray(layer_dims[1:], dtype=np.int64) * m)]).astype(np.int64)
