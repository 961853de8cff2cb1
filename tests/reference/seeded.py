"""The seeded random weights medseg's parity tests use, in numpy alone (no torch), so that
the reference scripts and the Python package's tests make the same tensors as
`medseg::testing::seeded_random_state_dict` does in Rust."""
import json
import struct

import numpy as np


def splitmix64(x):
    """Vectorised splitmix64 on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def random_tensor(index, name, shape, seed=2024):
    """The generator that medseg reimplements bit for bit (`medseg::testing::seeded_random_state_dict`).

    Element j of the tensor numbered `index` (state_dict keys in sorted order):
      z = splitmix64(seed * 2^40 + index * 2^32 + j ... ) -> u = (z >> 40) / 2^24 in [0, 1)
      v = (2u - 1) * scale   (float64, then float32), or 1 + 0.1 (2u - 1) for norm weights.
    Every float tensor is randomised, pos_embed and rel_pos included.
    """
    n = int(np.prod(shape))
    j = np.arange(n, dtype=np.uint64)
    base = np.uint64((seed << 40) + (index << 32))
    z = splitmix64(base + j)
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    s = 2.0 * u - 1.0
    if len(shape) >= 2 and "rel_pos" not in name and "pos_embed" not in name:
        fan_in = int(np.prod(shape[1:]))
        v = s * np.sqrt(3.0 / fan_in)
    elif name.endswith("weight") and len(shape) == 1:
        v = 1.0 + 0.1 * s
    else:
        v = 0.1 * s
    return v.astype(np.float32).reshape(shape)


def state_dict(layout_text, seed=2024):
    """Every tensor of a layout listing (`name d0 d1 ...` per line, in sorted order)."""
    out = {}
    for i, line in enumerate(l for l in layout_text.splitlines() if l.strip()):
        name, *dims = line.split()
        out[name] = random_tensor(i, name, tuple(int(d) for d in dims), seed)
    return out


def write_safetensors(path, tensors):
    """`tensors` (name → float32 array) as a .safetensors file."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
