#!/usr/bin/env python3
"""Craft hostile checkpoint files for medseg's robustness tests (tests/fixtures/hostile/).
Needs only the standard library and numpy; no torch. Every file is tiny. Run:
    python3 tests/reference/make_hostile.py
"""
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "hostile"
OUT.mkdir(parents=True, exist_ok=True)


def torch_zip(name, data_pkl: bytes, storages: dict, extra: dict = None):
    """A torch.save-style zip: archive/data.pkl, archive/data/<key>, archive/version."""
    with zipfile.ZipFile(OUT / name, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
        for k, v in storages.items():
            z.writestr(f"archive/data/{k}", v)
        for k, v in (extra or {}).items():
            z.writestr(k, v)


class Evil:
    """Unpickling this calls os.system: a checkpoint must never be executed."""
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/medseg-pwned",))


class EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/medseg-pwned')",))


def rebuild_tensor_pickle(shape, storage_key="0", numel=None, dtype="FloatStorage"):
    """Pickle of {'w': torch._utils._rebuild_tensor_v2(storage, 0, shape, stride)} by hand."""
    numel = numel if numel is not None else int(__import__("numpy").prod(shape))
    stride = []
    acc = 1
    for d in reversed(shape):
        stride.insert(0, acc)
        acc *= d
    # protocol 2 opcodes, written by hand (no torch needed)
    out = io.BytesIO()
    w = out.write
    w(b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01")            # PROTO 2, EMPTY_DICT, 'w'
    w(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02(")         # GLOBAL, MARK
    w(b"(X\x07\x00\x00\x00storageq\x03ctorch\n" + dtype.encode() + b"\nq\x04")
    w(b"X" + struct.pack("<I", len(storage_key)) + storage_key.encode())
    w(b"X\x03\x00\x00\x00cpu" + b"J" + struct.pack("<i", numel) + b"tq\x05Q")  # TUPLE, BINPERSID
    w(b"K\x00")                                             # storage offset 0
    w(b"(" + b"".join(b"J" + struct.pack("<i", d) for d in shape) + b"t")
    w(b"(" + b"".join(b"J" + struct.pack("<i", s) for s in stride) + b"t")
    w(b"\x89ccollections\nOrderedDict\n)Rq\x06tq\x07Rq\x08")  # requires_grad False, hooks; REDUCE
    w(b"s.")                                                # SETITEM, STOP
    return out.getvalue()


def main():
    import numpy as np
    # 1. os.system / eval through GLOBAL + REDUCE, as data.pkl of a torch zip, and as a raw pickle
    torch_zip("exec_os_system.pth", pickle.dumps({"w": Evil()}, protocol=2), {})
    torch_zip("exec_eval.pth", pickle.dumps({"w": EvalEvil()}, protocol=2), {})
    (OUT / "raw_pickle_os_system.pth").write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    # 2. a valid tiny checkpoint (the control), then variants of it
    good = np.arange(6, dtype=np.float32).tobytes()
    torch_zip("tiny_valid.pth", rebuild_tensor_pickle((2, 3)), {"0": good})
    # storage smaller than the shape says
    torch_zip("storage_too_small.pth", rebuild_tensor_pickle((2, 3)), {"0": good[:8]})
    # a declared size far beyond the file (must not allocate it)
    torch_zip("huge_declared_size.pth", rebuild_tensor_pickle((1 << 20, 1 << 20), numel=1 << 30), {"0": good})
    # a member name that escapes the archive
    torch_zip("path_traversal.pth", rebuild_tensor_pickle((2, 3)), {"0": good}, {"../../../../tmp/medseg-evil": b"x"})
    # truncated zip (central directory cut off)
    data = (OUT / "tiny_valid.pth").read_bytes()
    (OUT / "truncated_zip.pth").write_bytes(data[: len(data) - 40])
    # 3. safetensors whose header lies: offsets beyond the data, and a huge header length
    hdr = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}).encode()
    (OUT / "safetensors_lying_offsets.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + good)
    (OUT / "safetensors_huge_header.safetensors").write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    hdr = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    (OUT / "safetensors_nan.safetensors").write_bytes(
        struct.pack("<Q", len(hdr)) + hdr + np.array([0, 1, np.nan, 3, np.inf, 5], np.float32).tobytes())
    print("hostile files in", OUT)


if __name__ == "__main__":
    main()
