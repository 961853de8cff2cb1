//! LiteMedSAM with its official weights against the official PyTorch pipeline
//! (golden files from `tests/reference/make_golden.py`).
//!
//! Tolerances (issue #2): embedding and low-res logits max |Δ| ≤ 5e-3 from the reference's own
//! input tensor; IoU predictions |Δ| ≤ 1e-3; end-to-end mask IoU ≥ 0.99 from the raw PNG.
//!
//! The golden files keep every 8th embedding channel (`embedding_channels`: the encoder is
//! compared on those 32 of 256) and the whole embedding only for the demo case; the decoder
//! runs from the reference's embedding where the file has it, else from ours.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::frame::LOW_RES_LEN;
use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::{ModelFamily, Prompt, Segmenter};

#[test]
fn lite_medsam_matches_official_pipeline() {
    let device = medseg::cpu();
    let seg = Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &device)
        .expect("official LiteMedSAM weights load");
    let cases = golden_cases("lite-medsam");
    let n = cases.len();
    for Case {
        name,
        golden: mut g,
        image,
        bbox,
    } in cases
    {
        // 1. preprocessing: INTER_AREA resize to the grey level, and the model input tensor
        let input = seg.preprocess(&image).unwrap();
        let (resized, rshape) = g.u8("resized");
        let (ch, cw) = input.content;
        assert_eq!((ch, cw), (rshape[0], rshape[1]), "{name}: resized size");
        let (ref_input, _) = g.f32("input");
        let dx = max_abs_diff(&input.data, &ref_input);
        assert!(
            dx == 0.0,
            "{name}: model input differs by {dx} (resize mismatch)"
        );
        let _ = resized;

        // 2. image encoder from the reference's own input tensor
        let x = Tensor::<4>::from_data(TensorData::new(ref_input, [1, 3, 256, 256]), &device);
        let emb = seg.model().expect("a SAM family").embed(x);
        let ours = to_vec(emb.clone()).unwrap();
        let (ref_channels, cshape) = g.f32("embedding_channels");
        assert_eq!(cshape, [1, 32, 64, 64], "{name}: embedding_channels shape");
        let every_8th: Vec<f32> = ours
            .chunks_exact(64 * 64)
            .step_by(8)
            .flatten()
            .copied()
            .collect();
        let d_emb = max_abs_diff(&every_8th, &ref_channels);

        // 3. prompt encoder + mask decoder from the reference embedding (ours where the file
        // keeps only its channels) and box
        let decoder_input = if g.has("embedding") {
            let (ref_emb, _) = g.f32("embedding");
            let d_full = max_abs_diff(&ours, &ref_emb);
            assert!(
                d_full <= 5e-3,
                "{name}: embedding max |Δ| {d_full} over all channels"
            );
            Tensor::<4>::from_data(TensorData::new(ref_emb, [1, 256, 64, 64]), &device)
        } else {
            emb
        };
        let (box_model, _) = g.f32("box_model");
        let expect_box = seg.frame((image.height, image.width)).box_to_model(bbox);
        assert_eq!(box_model, expect_box.to_vec(), "{name}: box scaling");
        let batch = PromptBatch {
            boxes: Some(vec![expect_box]),
            ..Default::default()
        };
        let (masks, iou) = seg
            .model()
            .expect("a SAM family")
            .decode(decoder_input, &batch);
        let masks = to_vec(masks).unwrap();
        let iou = to_vec(iou).unwrap();
        let (ref_logits, _) = g.f32("low_res_logits");
        let (ref_iou, _) = g.f32("iou");
        let (ref_mlogits, _) = g.f32("multi_logits");
        let (ref_miou, _) = g.f32("multi_iou");
        let d_logits = max_abs_diff(&masks[..LOW_RES_LEN], &ref_logits);
        let d_mlogits = max_abs_diff(&masks[LOW_RES_LEN..], &ref_mlogits);
        let d_iou = max_abs_diff(&iou[..1], &ref_iou);
        let d_miou = max_abs_diff(&iou[1..], &ref_miou);

        // 4. end to end from the PNG
        let pred = seg.segment(&image, bbox).unwrap();
        let (ref_mask, _) = g.u8("mask");
        let ref_mask: Vec<bool> = ref_mask.iter().map(|&v| v > 0).collect();
        let e2e = mask_iou(pred.mask(0, 0), &ref_mask);
        let multi = seg
            .predict(
                &seg.embed(&image).unwrap(),
                &Prompt {
                    multimask: true,
                    ..Prompt::from_box(bbox)
                },
            )
            .unwrap();
        assert_eq!((multi.batch, multi.masks_per_prompt), (1, 3));

        println!(
            "{name}: embedding {d_emb:.2e}  logits {d_logits:.2e}  multimask logits {d_mlogits:.2e}  \
             iou {d_iou:.2e}  multimask iou {d_miou:.2e}  e2e mask IoU {e2e:.5}"
        );
        assert!(d_emb <= 5e-3, "{name}: embedding max |Δ| {d_emb}");
        assert!(d_logits <= 5e-3, "{name}: logits max |Δ| {d_logits}");
        assert!(
            d_mlogits <= 5e-3,
            "{name}: multimask logits max |Δ| {d_mlogits}"
        );
        assert!(
            d_iou <= 1e-3 && d_miou <= 1e-3,
            "{name}: IoU |Δ| {d_iou} {d_miou}"
        );
        assert!(e2e >= 0.99, "{name}: end-to-end mask IoU {e2e}");
    }
    assert!(
        n >= 4,
        "expected at least four LiteMedSAM golden cases, found {n}"
    );
}
