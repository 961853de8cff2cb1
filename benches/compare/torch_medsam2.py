"""PyTorch side of compare_volume.sh for MedSAM2: the official `sam2==1.1.0` video predictor
with MedSAM2's overrides and the parity tests' seeded random weights (the cost of
`MedSAM2_latest.pt`, which cannot be had here), run as MedSAM2's 3D script runs it on the
8-bit volume `volume_times medsam2` wrote; timed; the Dice of its 3D mask with medseg's.

    python torch_medsam2.py OUT THREADS     (OUT as given to volume_times)

Timed: each slice PIL RGB → resize 512² → /255 → ImageNet mean/std, `init_state`, the box on
the key slice, `propagate_in_video`, `reset_state`, the box again, `propagate_in_video(reverse=
True)`, union of logits > 0 at the slice size, largest 3D component (skimage). Not timed:
building the model and its weights. Prints one JSON line like volume_times.
"""
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import measure

out, threads = Path(sys.argv[1]), int(sys.argv[2])
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
import make_medsam2_golden as m2  # noqa: E402  (the predictor with MedSAM2's overrides)
import seeded  # noqa: E402

torch.set_num_threads(threads)
meta = json.loads(out.with_suffix(".json").read_text())
nz, ny, nx = meta["dims"]
vol = np.fromfile(out.with_suffix(".u8"), dtype=np.uint8).reshape(nz, ny, nx)
key, box = meta["key"], np.array(meta["box"], dtype=np.float32)

predictor = m2.video_predictor()
sd = seeded.state_dict((ROOT / "tests/fixtures/golden/medsam2_layout.txt").read_text())
sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += np.float32(m2.OBJ_BIAS)
predictor.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
predictor.eval()


def run():
    import sam2.sam2_video_predictor as vp
    frames, _ = m2.pil_input(vol)
    vp.load_video_frames = lambda **_: (frames, ny, nx)
    state = predictor.init_state(video_path="unused")
    segs = np.zeros((nz, ny, nx), dtype=bool)
    for reverse in (False, True):
        if reverse:
            predictor.reset_state(state)
        predictor.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=box)
        for t, _, logits in predictor.propagate_in_video(state, reverse=reverse):
            segs[t] |= (logits[0, 0] > 0).numpy()
    labels = measure.label(segs)  # full (26-) connectivity, as the script's getLargestCC
    if labels.max() > 0:
        sizes = np.bincount(labels.ravel())[1:]
        segs = labels == (1 + int(np.argmax(sizes)))
    return segs


with torch.inference_mode():
    t = time.perf_counter()
    segs = run()
    total = time.perf_counter() - t
ours = np.fromfile(out.with_suffix(".mask.u8"), dtype=np.uint8).reshape(nz, ny, nx) > 0
dice = 2 * (segs & ours).sum() / max(1, segs.sum() + ours.sum())
print(json.dumps({
    "model": "medsam2-torch", "slices": nz, "total_s": round(total, 3),
    "slices_per_s": round(nz / total, 4), "voxels": int(segs.sum()),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "dice_vs_medseg": round(float(dice), 5)}))
