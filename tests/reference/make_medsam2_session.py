#!/usr/bin/env python3
"""Golden outputs of SAM 2's video predictor (PyPI `sam2==1.1.0`, CPU) for medseg's 3D session
(issue #22): a scripted session of prompts, corrections and re-propagations on the template
slices of make_medsam2_golden.py, with the same seeded random MedSAM2 weights.

    python tests/reference/make_medsam2_session.py     # in the reference venv (make_golden.sh)

Writes tests/fixtures/golden/medsam2_session.npz. Each scenario runs twice: with
`add_all_frames_to_correct_as_cond=True` (prefix `cond_`, medseg's default) and with
upstream's default False (prefix `plain_`). For scenario prefix P and step k:
  P{k}_op       the step as JSON (utf-8 bytes): box / points / mask / propagate / clear / remove
  P{k}_ids      object ids after the step, in upstream's order
  P{k}_logits   [objects, Z, 32, 32]: each object's current low-res logits on each slice
                (`pred_masks`, every 4th pixel of 128²), NaN where it has none
  P{k}_fg       [objects, Z]: pixels with logits > 0 in the full 128² plane (-1: none)
  P{k}_visited  slices a propagation visited, in order (propagate steps only)
  mask3         the mask prompt (uint8 0/1, the slices' size)
"""
import json
from pathlib import Path

import numpy as np
import torch

import make_medsam2_golden as m2

ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "tests" / "fixtures" / "golden"


def disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def positive_point(logits, h, w):
    """A pixel (x, y) of the slice, image coordinates, well inside the mask of 128² `logits`
    (its highest logit), so a negative click there removes something."""
    iy, ix = np.unravel_index(np.argmax(logits), logits.shape)
    return [float((ix + 0.5) * w / 128), float((iy + 0.5) * h / 128)]


def snapshot(state, z):
    ids = list(state["obj_ids"])
    low = np.full((len(ids), z, 32, 32), np.nan, dtype=np.float32)
    fg = np.full((len(ids), z), -1, dtype=np.int32)
    for i in range(len(ids)):
        out_dict = state["output_dict_per_obj"][i]
        temp = state["temp_output_dict_per_obj"][i]
        for t in range(z):
            out = None
            for d in (temp["cond_frame_outputs"], temp["non_cond_frame_outputs"],
                      out_dict["cond_frame_outputs"], out_dict["non_cond_frame_outputs"]):
                if t in d:
                    out = d[t]
                    break
            if out is not None:
                p = out["pred_masks"][0, 0].float().numpy()
                low[i, t] = p[::4, ::4]
                fg[i, t] = int((p > 0).sum())
    return ids, low, fg


def run(predictor, frames, u8, prefix, out):
    import sam2.sam2_video_predictor as vp
    z, h, w = u8.shape
    vp.load_video_frames = lambda **_: (frames, h, w)
    state = predictor.init_state(video_path="unused")
    box2 = [20.0, 30.0, 90.0, 100.0]
    steps = [
        {"op": "box", "slice": 4, "obj": 1, "box": [float(v) for v in m2.BOX]},
        {"op": "propagate", "reverse": False},
        {"op": "propagate", "reverse": True},
        {"op": "points", "slice": 9, "obj": 1, "labels": [0], "clear": False},  # point chosen below
        {"op": "propagate", "reverse": False},
        {"op": "propagate", "reverse": True},
        {"op": "points", "slice": 1, "obj": 1, "points": [[100.0, 120.0]], "labels": [1],
         "clear": False},
        {"op": "propagate", "reverse": False},
        {"op": "propagate", "reverse": True},
        {"op": "box", "slice": 7, "obj": 2, "box": box2},
        {"op": "points", "slice": 7, "obj": 2, "points": [[60.0, 40.0]], "labels": [0],
         "clear": False},
        # Upstream needs an object pointer wherever it tracks an object (on the CPU its
        # bfloat16 memories meet float32 weights otherwise): new objects propagate from their
        # first prompt.
        {"op": "propagate", "reverse": False, "start": 7},
        {"op": "propagate", "reverse": True, "start": 7},
        {"op": "mask", "slice": 11, "obj": 3},
        {"op": "propagate", "reverse": False, "start": 11, "max": 3},
        {"op": "clear", "slice": 1, "obj": 1},
        {"op": "remove", "obj": 2},
        {"op": "propagate", "reverse": False, "start": 11},
        {"op": "propagate", "reverse": True, "start": 11},
    ]
    for k, step in enumerate(steps):
        op = step["op"]
        visited = []
        if op == "box":
            predictor.add_new_points_or_box(state, frame_idx=step["slice"], obj_id=step["obj"],
                                            box=np.array(step["box"], dtype=np.float32))
        elif op == "points":
            if "points" not in step:
                i = state["obj_id_to_idx"][step["obj"]]
                cur = state["output_dict_per_obj"][i]["non_cond_frame_outputs"][step["slice"]]
                step["points"] = [positive_point(cur["pred_masks"][0, 0].numpy(), h, w)]
            predictor.add_new_points_or_box(
                state, frame_idx=step["slice"], obj_id=step["obj"],
                points=np.array(step["points"], dtype=np.float32),
                labels=np.array(step["labels"], dtype=np.int32), clear_old_points=step["clear"])
        elif op == "mask":
            predictor.add_new_mask(state, frame_idx=step["slice"], obj_id=step["obj"],
                                   mask=out["mask3"].astype(bool))
        elif op == "propagate":
            for t, _, _ in predictor.propagate_in_video(
                    state, start_frame_idx=step.get("start"),
                    max_frame_num_to_track=step.get("max"), reverse=step["reverse"]):
                visited.append(t)
        elif op == "clear":
            predictor.clear_all_prompts_in_frame(state, step["slice"], step["obj"])
        elif op == "remove":
            predictor.remove_object(state, step["obj"])
        ids, low, fg = snapshot(state, z)
        out[f"{prefix}{k}_op"] = np.frombuffer(json.dumps(step).encode(), dtype=np.uint8)
        out[f"{prefix}{k}_ids"] = np.array(ids, dtype=np.int32)
        out[f"{prefix}{k}_logits"] = low
        out[f"{prefix}{k}_fg"] = fg
        if op == "propagate":
            out[f"{prefix}{k}_visited"] = np.array(visited, dtype=np.int32)
        print(f"{prefix}{k} {op}: objects {ids}, fg {fg.tolist()}")
    out[f"{prefix}steps"] = np.array([len(steps)], dtype=np.int32)


def main():
    u8, _, _ = m2.template_slices()
    frames, _ = m2.pil_input(u8)
    z, h, w = u8.shape
    out = {"mask3": disk(h, w, 0.55 * h, 0.5 * w, 0.12 * min(h, w)).astype(np.uint8)}
    for prefix, as_cond in (("cond_", True), ("plain_", False)):
        predictor = m2.video_predictor()
        m2.seeded(predictor, "")
        with torch.no_grad():
            predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(m2.OBJ_BIAS)
        predictor.add_all_frames_to_correct_as_cond = as_cond
        run(predictor, frames, u8, prefix, out)
    np.savez_compressed(GOLD / "medsam2_session.npz", **out)


if __name__ == "__main__":
    main()
