#!/usr/bin/env python3
"""Golden outputs of the official SAM 2 code (PyPI `sam2==1.1.0`, CPU) for medseg's MedSAM2
parity tests (issue #10), with seeded random weights (the generator of make_golden.py, which
medseg reimplements bit for bit), so no checkpoint is committed.

    SAM2_BUILD_CUDA=0 pip install sam2==1.1.0      # into the reference venv (make_golden.sh)
    python tests/reference/make_medsam2_golden.py

Writes into tests/fixtures/golden/:
  hiera_t_layout.txt   name and shape of every tensor of MedSAM2's Hiera-Tiny trunk
                       (`image_encoder.trunk.*`, as in MedSAM2_latest.pt)
  medsam2_trunk.npz    the trunk's four stage outputs on the demo CT slice (512², ImageNet
                       mean/std as MedSAM2's 3D script normalises), every 8th channel of each
                       (`level{i}_channels`, `[1, C_i / 8, 128 / 2^i, 128 / 2^i]`)

Stages covered so far: the Hiera trunk. The FPN neck, prompt encoder, mask decoder, memory
encoder and memory attention follow (issue #10).
"""
from pathlib import Path

import numpy as np
import torch
from skimage import io

import make_golden as mg

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "tests" / "fixtures" / "golden"
PREFIX = "image_encoder.trunk."
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def hiera_tiny():
    """MedSAM2's trunk: `sam2.1_hiera_t.yaml` (image_size 512 does not change the trunk)."""
    from sam2.modeling.backbones.hieradet import Hiera
    return Hiera(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                 window_pos_embed_bkg_spatial_size=[7, 7])


def seeded(model, prefix):
    """Every tensor of `model` from the seeded generator, numbered in sorted name order."""
    sd = model.state_dict()
    names = sorted(prefix + k for k in sd)
    layout = [(n, tuple(sd[n[len(prefix):]].shape)) for n in names]
    model.load_state_dict({n[len(prefix):]: torch.from_numpy(mg.random_tensor(i, n, s))
                           for i, (n, s) in enumerate(layout)})
    return layout


def demo_input():
    """The demo CT slice (512² grey) as MedSAM2's script feeds it: /255, 3 channels,
    ImageNet mean/std (float32)."""
    img = io.imread(ROOT / "tests" / "fixtures" / "images" / "demo_ct.png")
    assert img.shape == (512, 512), img.shape
    x = img.astype(np.float32) / np.float32(255.0)
    x = (x[None, :, :] - MEAN[:, None, None]) / STD[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(x[None]))


def main():
    trunk = hiera_tiny().eval()
    layout = seeded(trunk, PREFIX)
    with open(GOLD / "hiera_t_layout.txt", "w") as f:
        for n, s in layout:
            f.write(n + " " + " ".join(str(d) for d in s) + "\n")
    with torch.no_grad():
        feats = trunk(demo_input())
    out = {}
    for i, t in enumerate(feats):
        a = t.numpy().astype(np.float32)
        out[f"level{i}_channels"] = np.ascontiguousarray(a[:, ::8])
        print(f"level {i}: {a.shape}, |max| {np.abs(a).max():.3f}")
    np.savez_compressed(GOLD / "medsam2_trunk.npz", **out)


if __name__ == "__main__":
    main()
