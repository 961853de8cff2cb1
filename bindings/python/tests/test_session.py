"""medseg.VolumeSession against SAM 2's video predictor (sam2==1.1.0): the first steps of the
scripted session of tests/reference/make_medsam2_session.py (box, propagation both ways, a
negative click where the mask is wrong, a positive click on another slice, propagation again),
with the parity tests' seeded MedSAM2 weights written as a user's checkpoint."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import medseg

ROOT = Path(__file__).resolve().parents[3]
FIX = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def medsam2(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "reference"))
    import seeded
    sd = seeded.state_dict((FIX / "golden" / "medsam2_layout.txt").read_text())
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += np.float32(6.0)  # OBJ_BIAS
    weights = tmp_path_factory.mktemp("w") / "medsam2_random.safetensors"
    seeded.write_safetensors(weights, sd)
    return medseg.Segmenter("medsam2", weights=str(weights))


def session(seg):
    u8 = np.load(FIX / "golden" / "medsam2_volume.npz")["slices_u8"]
    return medseg.VolumeSession(seg, u8.astype(np.float32) + 0.5, spacing=(2, 1, 1),
                                window="127.5,255", modality="mr"), u8.shape


def test_session_steps_match_sam2(medsam2):
    g = np.load(FIX / "golden" / "medsam2_session.npz")
    s, (z, h, w) = session(medsam2)
    for k in range(9):
        op = json.loads(bytes(g[f"cond_{k}_op"]).decode())
        if op["op"] == "box":
            m = s.add_new_points_or_box(op["slice"], op["obj"], box=op["box"])
            assert m.shape == (h, w) and m.dtype == bool
        elif op["op"] == "points":
            s.add_new_points_or_box(op["slice"], op["obj"], points=op["points"],
                                    labels=op["labels"], clear_old_points=op["clear"])
        else:
            visited = s.propagate_in_video(op.get("start"), op.get("max"), op["reverse"])
            assert visited == g[f"cond_{k}_visited"].tolist(), op
        assert s.obj_ids == g[f"cond_{k}_ids"].tolist()
        theirs = g[f"cond_{k}_logits"][0]
        for t in range(z):
            ours = s.logits(1, t)
            assert (ours is None) == bool(np.isnan(theirs[t, 0, 0])), (k, t)
            if ours is not None:
                assert np.abs(ours[::4, ::4] - theirs[t]).max() <= 5e-3, (k, t)
    masks = s.masks()
    assert list(masks) == [1] and masks[1].shape == (z, h, w)
    labels = s.label_map()
    assert labels.dtype == np.uint16 and np.array_equal(labels == 1, masks[1])
    assert s.volumes_ml()[1] == pytest.approx(masks[1].sum() * 2.0 / 1000)


def test_session_refuses_bad_prompts(medsam2):
    s, (z, h, w) = session(medsam2)
    with pytest.raises(medseg.PromptError, match="outside the volume"):
        s.add_new_points_or_box(z, 1, box=[1, 1, 10, 10])
    with pytest.raises(medseg.PromptError, match="must come first"):
        s.add_new_points_or_box(2, 1, box=[1, 1, 10, 10], clear_old_points=False)
    with pytest.raises(medseg.PromptError, match="label 2"):
        s.add_new_points_or_box(2, 1, points=[[5, 5]], labels=[2])
    with pytest.raises(medseg.PromptError, match="outside the"):
        s.add_new_points_or_box(2, 1, points=[[w + 5, 5]], labels=[1])
    with pytest.raises(medseg.PromptError, match="object id 0"):
        s.add_new_points_or_box(2, 0, box=[1, 1, 10, 10])
    with pytest.raises(medseg.PromptError, match="no prompts"):
        s.propagate_in_video()
    with pytest.raises(ValueError, match="mask of shape"):
        s.add_new_mask(2, 1, np.zeros((3, 3), bool))
    with pytest.raises(medseg.PromptError, match="no object 7"):
        s.remove_object(7)


def test_lite_medsam_session_is_the_chain_rule():
    """LiteMedSAM (official weights from the cache): one box and a propagation both ways give
    segment_volume's mask; a click refines the slice and the chain goes on from it."""
    seg = medseg.Segmenter("lite-medsam")
    u8 = np.load(FIX / "golden" / "medsam2_volume.npz")["slices_u8"]
    vol = u8.astype(np.float32) + 0.5
    s = medseg.VolumeSession(seg, vol, spacing=(2, 1, 1), window="127.5,255", modality="mr")
    s.add_new_points_or_box(4, 1, box=[60, 80, 140, 150])
    s.propagate_in_video()
    s.propagate_in_video(reverse=True)
    mask, stats = seg.segment_volume(vol, 4, [60, 80, 140, 150], spacing=(2, 1, 1),
                                     window="127.5,255", modality="mr")
    assert np.array_equal(s.masks()[1], mask)
    assert s.volumes_ml()[1] == pytest.approx(stats["volume_ml"])
    with pytest.raises(medseg.PromptError, match="MedSAM2"):
        s.add_new_mask(4, 1, np.zeros(u8.shape[1:], bool))
