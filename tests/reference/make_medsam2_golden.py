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

  medsam2_layout.txt / medsam2_volume.npz  the whole model (see volume_golden)
  sam21_volume.npz     Meta's SAM 2.1 Tiny at 1024² on 3 slices (see sam21_golden)
"""
import sys
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
SLICES = 14        # template slices in the volume test
KEY = 4            # the key slice: 9 slices ahead (the memory bank fills), 4 behind
BOX = [60.0, 80.0, 140.0, 150.0]   # on the key slice, x0 y0 x1 y1 in pixels
OBJ_BIAS = 6.0     # added to the object-score head's last bias (see volume_golden)


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


def video_predictor(size=512):
    """The official SAM 2.1 Hiera-Tiny video predictor with MedSAM2's overrides (512², RoPE
    feature grids 32 × 32), as `build_sam2_video_predictor` makes it (its post-processing
    overrides included), on the CPU, before any weights. `size=1024`: Meta's own setting (the
    config unchanged)."""
    from sam2.build_sam import build_sam2_video_predictor
    grid = f"[{size // 16},{size // 16}]"
    overrides = [] if size == 1024 else [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes={grid}",
        f"++model.memory_attention.layer.cross_attention.feat_sizes={grid}",
    ]
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu",
        hydra_overrides_extra=overrides)


def template_slices():
    """SLICES axial slices of the MNI T1 template (nilearn's package data) mapped to 8 bits
    (0 → 0, the 99.5th percentile of the brain → 255), the key slice's index and a box on it
    in pixel coordinates (x0, y0, x1, y1)."""
    import nibabel as nib
    import nilearn
    path = (Path(nilearn.__file__).parent / "datasets" / "data" /
            "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol = np.asarray(nib.load(path).dataobj, dtype=np.float32)  # x, y, z
    z0 = 84
    sub = np.transpose(vol[:, :, z0:z0 + SLICES], (2, 1, 0))[:, ::-1]  # z, y (anterior up), x
    hi = np.percentile(sub[sub > 0], 99.5)
    u8 = np.clip(np.rint(sub / hi * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(u8), KEY, np.array(BOX, dtype=np.float32)


def pil_input(u8_slices, side=512):
    """MedSAM2's 3D script: each slice PIL RGB → resize to 512² (Pillow's default filter,
    bicubic) → /255 → ImageNet mean/std. Returns the normalised frames and the resized
    8-bit slices."""
    from PIL import Image
    resized = np.stack([np.asarray(Image.fromarray(s).convert("RGB").resize((side, side)))
                        for s in u8_slices])  # Z, 512, 512, 3
    x = resized.astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), resized[..., 0]


class Capture:
    """Forward hooks that keep every output of the named submodules, in call order."""

    def __init__(self, model, names):
        self.calls = {n: [] for n in names}
        for n in names:
            model.get_submodule(n).register_forward_hook(self._hook(n))

    def _hook(self, name):
        def keep(_module, _inputs, output):
            self.calls[name].append(output)
        return keep


def run_passes(predictor, frames, key, box):
    """The 3D script's two passes: box on the key slice, propagate forward; reset, the same
    box, propagate backward. Returns per pass the low-res logits [Z, 128, 128] (NaN where the
    pass did not go) and the video-resolution logits' masks."""
    import sam2.sam2_video_predictor as vp
    z, _, h, w = frames.shape
    out_low = np.full((2, z, h // 4, w // 4), np.nan, dtype=np.float32)
    state = None
    for p, reverse in enumerate((False, True)):
        if state is None:
            vp.load_video_frames = lambda **_: (frames, H, W)
            state = predictor.init_state(video_path="unused")
        else:
            predictor.reset_state(state)
        predictor.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=box)
        for t, _, _ in predictor.propagate_in_video(state, reverse=reverse):
            low = state["output_dict_per_obj"][0]
            out = low["cond_frame_outputs"].get(t) or low["non_cond_frame_outputs"][t]
            out_low[p, t] = out["pred_masks"][0, 0].float().numpy()
    return out_low


def volume_golden(layout_only=False):
    """The whole MedSAM2 model on SLICES template slices: stage outputs on the key slice and
    on the first tracked slice, and every slice's logits in both passes."""
    predictor = video_predictor()
    layout = seeded(predictor, "")
    with open(GOLD / "medsam2_layout.txt", "w") as f:
        for n, s in layout:
            f.write(n + " " + " ".join(str(d) for d in s) + "\n")
    if layout_only:
        return
    with torch.no_grad():  # the random decoder would say "no object" everywhere (REFERENCE.md)
        predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(OBJ_BIAS)
    u8, key, box = template_slices()
    frames, resized = pil_input(u8)
    cap = Capture(predictor, ["sam_mask_decoder", "memory_encoder", "memory_attention",
                              "sam_prompt_encoder"])
    global H, W
    H, W = u8.shape[1:]
    low = run_passes(predictor, frames, key, box)
    out = {"slices_u8": u8, "key": np.array([key], dtype=np.float32), "box": box,
           "resized_key": resized[key], "resized_first": resized[0], "low_res": low}
    dec = cap.calls["sam_mask_decoder"]
    masks, ious, tokens, obj = dec[0]       # the key slice (box, single-mask + stability)
    out["key_mask"] = masks[0, 0].numpy()
    out["key_iou"] = ious[0].numpy()
    out["key_obj_score"] = obj[0].numpy()
    sparse, _dense = cap.calls["sam_prompt_encoder"][0]
    out["key_sparse"] = sparse[0].numpy()
    mem = cap.calls["memory_encoder"][0]    # the key slice's memory (binarised mask)
    out["key_maskmem"] = mem["vision_features"][0, ::4].numpy()
    out["key_maskmem_pos"] = mem["vision_pos_enc"][0][0, ::8].numpy()
    cond = cap.calls["memory_attention"][0]  # key + 1: memory-conditioned features
    out["next_conditioned"] = cond[:, 0].numpy().T.reshape(256, 32, 32)[::8]
    masks, ious, tokens, obj = dec[1]       # key + 1 (multimask, tracking)
    out["next_masks"] = masks[0].numpy()
    out["next_iou"] = ious[0].numpy()
    out["next_obj_score"] = obj[0].numpy()
    scores = [float(o[3][0, 0]) for o in dec]
    print(f"object scores over {len(dec)} decoder runs: {min(scores):.2f} .. {max(scores):.2f}")
    done = np.isfinite(low[..., 0, 0])
    print(f"pass 0 slices {np.flatnonzero(done[0])}, pass 1 slices {np.flatnonzero(done[1])}")
    fg = [(low[p, t] > 0).mean() for p in range(2) for t in range(SLICES) if done[p, t]]
    print(f"foreground fraction per slice: {min(fg):.3f} .. {max(fg):.3f}")
    np.savez_compressed(GOLD / "medsam2_volume.npz", **out)


def sam21_golden():
    """Meta's SAM 2.1 Tiny at its native 1024² (the same layout and seeded weights as the
    MedSAM2 cases): 3 of the template slices, the box on the middle one, both passes' low-res
    logits (256²)."""
    predictor = video_predictor(1024)
    layout = seeded(predictor, "")
    listed = (GOLD / "medsam2_layout.txt").read_text().split()
    assert [n for n, _ in layout] == [w for w in listed if not w.isdigit()], "same layout"
    with torch.no_grad():
        predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(OBJ_BIAS)
    u8, key, box = template_slices()
    u8, key = np.ascontiguousarray(u8[key - 1:key + 2]), 1
    frames, _ = pil_input(u8, 1024)
    global H, W
    H, W = u8.shape[1:]
    low = run_passes(predictor, frames, key, box)
    np.savez_compressed(GOLD / "sam21_volume.npz", slices_u8=u8, box=box, low_res=low,
                        key=np.array([key], dtype=np.float32))
    print(f"sam2.1 at 1024: logits up to {np.nanmax(np.abs(low)):.2f}")


def main():
    if "--sam21-only" in sys.argv:
        return sam21_golden()
    if "--volume-only" not in sys.argv:
        encoder_golden()
    volume_golden()
    sam21_golden()


def encoder_golden():
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
