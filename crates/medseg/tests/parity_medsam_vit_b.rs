//! SAM ViT-B (the MedSAM architecture) at full 1024² with seeded random weights, every
//! float tensor randomised (pos_embed and rel_pos included), against the official
//! `segment-anything` 1.0 code (golden files from `tests/reference/make_golden.py`).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::frame::LOW_RES_LEN;
use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::{ModelFamily, Segmenter};

#[test]
fn vit_b_matches_official_segment_anything() {
    let device = medseg::cpu();
    let sd = random_vit_b_state_dict();
    // The same tensors through the safetensors reader, as a user converting a checkpoint would.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vit_b_random.safetensors");
    sd.save_safetensors(&path).unwrap();
    let seg = Segmenter::from_file(ModelFamily::MedSam, &path, &device).expect("ViT-B loads");

    let Case {
        golden: mut g,
        image,
        bbox,
        ..
    } = golden_cases("medsam").remove(0);

    // Preprocessing: skimage's anti-aliased cubic resize to 1024², to the grey level; the
    // reference input tensor is the official min-max of the official uint8 resize.
    let input = seg.preprocess(&image).unwrap();
    let (resized, _) = g.u8("resized");
    let lo = *resized.iter().min().unwrap() as f64;
    let hi = *resized.iter().max().unwrap() as f64;
    let ref_input: Vec<f32> = (0..3)
        .flat_map(|c| {
            let r = &resized;
            (0..1024 * 1024).map(move |p| ((r[p * 3 + c] as f64 - lo) / (hi - lo).max(1e-8)) as f32)
        })
        .collect();
    let d_in = max_abs_diff(&input.data, &ref_input);
    assert!(d_in == 0.0, "preprocessed input differs by {d_in}");

    let x = Tensor::<4>::from_data(TensorData::new(ref_input, [1, 3, 1024, 1024]), &device);
    let emb = seg.model().expect("a SAM family").embed(x);
    let (ref_emb, _) = g.f32("embedding");
    let d_emb = max_abs_diff(&to_vec(emb.clone()).unwrap(), &ref_emb);

    let (box_model, _) = g.f32("box_model");
    let expect_box = seg.frame((image.height, image.width)).box_to_model(bbox);
    assert_eq!(box_model, expect_box.to_vec(), "box scaling");
    let ref_emb_t = Tensor::<4>::from_data(TensorData::new(ref_emb, [1, 256, 64, 64]), &device);
    let batch = PromptBatch {
        boxes: Some(vec![expect_box]),
        ..Default::default()
    };
    let (masks, iou) = seg.model().expect("a SAM family").decode(ref_emb_t, &batch);
    let masks = to_vec(masks).unwrap();
    let iou = to_vec(iou).unwrap();
    let (ref_logits, _) = g.f32("low_res_logits");
    let (ref_mlogits, _) = g.f32("multi_logits");
    let (ref_iou, _) = g.f32("iou");
    let (ref_miou, _) = g.f32("multi_iou");
    let d_logits = max_abs_diff(&masks[..LOW_RES_LEN], &ref_logits);
    let d_mlogits = max_abs_diff(&masks[LOW_RES_LEN..], &ref_mlogits);
    let d_iou = max_abs_diff(&iou[..1], &ref_iou).max(max_abs_diff(&iou[1..], &ref_miou));

    // End to end: preprocessing, our embedding, decoder, sigmoid → bilinear → threshold.
    let emb_ours = seg
        .embedding_from_tensor(emb, seg.frame((image.height, image.width)))
        .unwrap();
    let pred = seg
        .predict(&emb_ours, &medseg::Prompt::from_box(bbox))
        .unwrap();
    let (ref_mask, _) = g.u8("mask");
    let ref_mask: Vec<bool> = ref_mask.iter().map(|&v| v > 0).collect();
    let e2e = mask_iou(pred.mask(0, 0), &ref_mask);
    println!(
        "vit_b demo_ct: embedding {d_emb:.2e}  logits {d_logits:.2e}  multimask logits {d_mlogits:.2e}  \
         iou {d_iou:.2e}  e2e mask IoU {e2e:.5}"
    );
    assert!(d_emb <= 5e-3, "embedding max |Δ| {d_emb}");
    assert!(
        d_logits <= 5e-3 && d_mlogits <= 5e-3,
        "logits max |Δ| {d_logits} {d_mlogits}"
    );
    assert!(d_iou <= 1e-3, "IoU |Δ| {d_iou}");
    assert!(e2e >= 0.99, "end-to-end mask IoU {e2e}");
}

#[test]
fn vit_b_layout_is_the_official_one() {
    // Every name and shape of sam_model_registry["vit_b"]().state_dict() is consumed, and
    // nothing else is expected: the loader would name any difference.
    let sd = random_vit_b_state_dict();
    assert!(sd.tensors.len() > 200);
    Segmenter::from_state_dict(ModelFamily::MedSam, &sd, &medseg::cpu()).expect("official layout");
}
