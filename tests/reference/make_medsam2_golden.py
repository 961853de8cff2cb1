#!/usr/bin/env python3
"""Golden outputs of the official SAM 2 code (PyPI `sam2==1.1.0`, CPU) for medseg's MedSAM2
parity tests (issue #10), with seeded random weights (the generator of make_golden.py, which
medseg reimplements bit for bit), so no checkpoint is committed.

    SAM2_BUILD_CUDA=0 pip install sam2==1.1.0      # into the reference venv (make_golden.sh)
    python tests/reference/make_medsam2_golden.py

Writes into tests/fixtures/golden/:
  medsam2_image_encoder_layout.txt  name and shape of every tensor of MedSAM2's image encoder
                       (`image_encoder.*`: Hiera-Tiny trunk and FPN neck, as in MedSAM2_latest.pt)
  medsam2_image_encoder.npz  on the demo CT slice (512², ImageNet mean/std as MedSAM2's 3D
                       script normalises):
        trunk{i}   the trunk's stage outputs, every 8th channel (`[1, C_i / 8, 128 / 2^i, ...]`)
        fpn{i}     the kept neck levels (`backbone_fpn`, after the scalp), every 32nd channel
        pos{i}     their positional encodings, every 32nd channel

Stages covered so far: the image encoder (trunk, neck). The prompt encoder, mask decoder,
memory encoder and memory attention follow (issue #10).
"""
from pathlib import Path

import numpy as np
import torch
from skimage import io

import make_golden as mg

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "tests" / "fixtures" / "golden"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def image_encoder_tiny():
    """MedSAM2's image encoder: `sam2.1_hiera_t.yaml`'s trunk, neck and scalp (image_size 512
    changes neither)."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    trunk = Hiera(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                  window_pos_embed_bkg_spatial_size=[7, 7])
    neck = FpnNeck(PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000),
                   d_model=256, backbone_channel_list=[768, 384, 192, 96], fpn_top_down_levels=[2, 3],
                   fpn_interp_model="nearest")
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


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
    encoder = image_encoder_tiny().eval()
    layout = seeded(encoder, "image_encoder.")
    with open(GOLD / "medsam2_image_encoder_layout.txt", "w") as f:
        for n, s in layout:
            f.write(n + " " + " ".join(str(d) for d in s) + "\n")
    x = demo_input()
    out = {}
    with torch.no_grad():
        for i, t in enumerate(encoder.trunk(x)):
            out[f"trunk{i}"] = np.ascontiguousarray(t.numpy()[:, ::8])
        b = encoder(x)
    for i, (f, p) in enumerate(zip(b["backbone_fpn"], b["vision_pos_enc"])):
        out[f"fpn{i}"] = np.ascontiguousarray(f.numpy()[:, ::32])
        out[f"pos{i}"] = np.ascontiguousarray(p.numpy()[:, ::32])
        print(f"fpn {i}: {tuple(f.shape)}, |max| {f.abs().max():.3f}")
    assert torch.equal(b["vision_features"], b["backbone_fpn"][-1])
    np.savez_compressed(GOLD / "medsam2_image_encoder.npz", **out)


if __name__ == "__main__":
    main()
