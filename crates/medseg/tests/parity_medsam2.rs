//! MedSAM2 (SAM 2.1 Hiera-Tiny at 512², issue #10) stage by stage against the official
//! `sam2==1.1.0` code with seeded random weights (`tests/reference/make_medsam2_golden.py`),
//! on MedSAM2's 512² input.
//!
//! - `image_encoder_matches_sam2` (demo CT slice): the trunk's four stage outputs (every 8th
//!   channel), the neck's kept levels and their positional encodings (every 32nd channel);
//!   max |Δ| ≤ 1e-3 per stage (values reach about ten; fp32 rounding over 12 blocks ~1e-5).
//! - `volume_matches_sam2` (14 slices of the MNI template, a box on slice 4, the official
//!   video predictor's two passes as MedSAM2's 3D script runs them): Pillow's bicubic resize
//!   byte for byte; on the key slice the sparse prompt, the mask logits, IoU and object score,
//!   the memory features; on the first tracked slice the memory-conditioned features and the
//!   three candidate masks; then every slice's low-res logits in both passes, max |Δ| ≤ 5e-3,
//!   and the 3D mask (union of both passes at input resolution) IoU ≥ 0.99.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::model::common::Loader;
use medseg::model::memory_bank::{ObjectOutputs, TrackOutput};
use medseg::model::prompt_encoder::PromptBatch;
use medseg::model::sam2::{HeadsOut, Sam2};
use medseg::model::sam2_image_encoder::Sam2ImageEncoder;
use medseg::preprocess::{bilinear_resize, pil_bicubic_resize_u8};
use medseg::propagate_memory::{box_points, no_points, two_passes};
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};
use medseg::weights::StateDict;
use medseg::{Error, Image, ModelFamily, Prompt, Segmenter};
use std::ops::ControlFlow;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The demo slice as MedSAM2's script feeds it: /255, three channels, ImageNet mean/std.
fn demo_input(device: &burn::tensor::Device) -> Tensor<4> {
    let grey = read_png_grey("images/demo_ct.png");
    assert_eq!(grey.len(), 512 * 512);
    normalised(&grey, device)
}

/// A 512² grey slice → `[1, 3, 512, 512]`: /255, ImageNet mean/std per channel.
fn normalised(grey: &[u8], device: &burn::tensor::Device) -> Tensor<4> {
    let data: Vec<f32> = (0..3)
        .flat_map(|c| {
            grey.iter()
                .map(move |&v| (v as f32 / 255.0 - MEAN[c]) / STD[c])
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [1, 3, 512, 512]), device)
}

/// Every `step`-th channel of `t` (batch 1), and `t`'s shape.
fn channels(t: Tensor<4>, step: usize) -> (Vec<f32>, [usize; 4]) {
    let dims = t.dims();
    let plane = dims[2] * dims[3];
    let v = to_vec(t).unwrap();
    let kept = v
        .chunks_exact(plane)
        .step_by(step)
        .flatten()
        .copied()
        .collect();
    (kept, dims)
}

/// Compare `ours` with the golden `name`, print and check the difference.
fn check(g: &mut Golden, name: &str, ours: Tensor<4>, step: usize, expect: [usize; 4]) {
    let (ours, dims) = channels(ours, step);
    assert_eq!(dims, expect, "{name}: shape");
    let (theirs, shape) = g.f32(name);
    assert_eq!(
        shape,
        [1, expect[1] / step, expect[2], expect[3]],
        "{name}: golden shape"
    );
    let d = max_abs_diff(&ours, &theirs);
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("medsam2 {name} {dims:?}: max |Δ| {d:.2e} (values up to {scale:.2})");
    assert!(d <= 1e-3, "{name}: max |Δ| {d}");
}

#[test]
fn image_encoder_matches_sam2() {
    let device = medseg::cpu();
    let layout =
        std::fs::read_to_string(fixtures().join("golden/medsam2_image_encoder_layout.txt"))
            .unwrap();
    let sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    let mut l = Loader::new(&sd, &device);
    let encoder = Sam2ImageEncoder::load_tiny(&mut l, "image_encoder");
    l.finish("medsam2 image encoder")
        .expect("every tensor used, none missing");
    let mut g = Golden::open("golden/medsam2_image_encoder.npz");

    let x = demo_input(&device);
    let trunk = encoder.trunk().forward(x.clone());
    assert_eq!(trunk.len(), 4);
    for (i, f) in trunk.into_iter().enumerate() {
        let side = 128 >> i;
        check(&mut g, &format!("trunk{i}"), f, 8, [1, 96 << i, side, side]);
    }
    let out = encoder.forward(x);
    assert_eq!(
        out.backbone_fpn.len(),
        3,
        "the scalp drops the coarsest level"
    );
    let vf = channels(out.vision_features.clone(), 1);
    assert_eq!(vf, channels(out.backbone_fpn[2].clone(), 1));
    for (i, (f, p)) in out
        .backbone_fpn
        .into_iter()
        .zip(out.vision_pos_enc)
        .enumerate()
    {
        let side = 128 >> i;
        check(&mut g, &format!("fpn{i}"), f, 32, [1, 256, side, side]);
        check(&mut g, &format!("pos{i}"), p, 32, [1, 256, side, side]);
    }
}

/// The whole model with the reference's seeded weights.
fn medsam2_random(device: &burn::tensor::Device) -> Sam2 {
    Sam2::from_state_dict(&medsam2_state_dict(), 512, device)
        .expect("every tensor used, none missing")
}

/// Compare two arrays of the same layout; print and check max |Δ|.
fn close(name: &str, ours: &[f32], theirs: &[f32], tol: f32) {
    let d = max_abs_diff(ours, theirs);
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("medsam2 {name}: max |Δ| {d:.2e} (values up to {scale:.2})");
    assert!(d <= tol, "{name}: max |Δ| {d} > {tol}");
}

/// The golden volume: 8-bit slices `[Z, H, W]`, key slice, box in pixels.
struct Case {
    slices: Vec<u8>,
    dims: [usize; 3],
    key: usize,
    bbox: [f32; 4],
}

impl Case {
    fn read(g: &mut Golden) -> Self {
        let (slices, shape) = g.u8("slices_u8");
        let key = g.f32("key").0[0] as usize;
        let b = g.f32("box").0;
        Self {
            slices,
            dims: [shape[0], shape[1], shape[2]],
            key,
            bbox: [b[0], b[1], b[2], b[3]],
        }
    }

    fn resized(&self, z: usize) -> Vec<u8> {
        let [_, h, w] = self.dims;
        pil_bicubic_resize_u8(&self.slices[z * h * w..(z + 1) * h * w], h, w, 512, 512)
    }

    /// The box as the predictor scales it: `box / [W, H, W, H] * 512`, in `float32`.
    fn model_box(&self) -> [f32; 4] {
        let [_, h, w] = self.dims;
        let (w, h) = (w as f32, h as f32);
        let b = self.bbox;
        [
            b[0] / w * 512.0,
            b[1] / h * 512.0,
            b[2] / w * 512.0,
            b[3] / h * 512.0,
        ]
    }
}

#[test]
fn pillow_bicubic_resize_matches_byte_for_byte() {
    let mut g = Golden::open("golden/medsam2_volume.npz");
    let case = Case::read(&mut g);
    for (name, z) in [("resized_key", case.key), ("resized_first", 0)] {
        let (theirs, shape) = g.u8(name);
        assert_eq!(shape, [512, 512]);
        let ours = case.resized(z);
        let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} of 262144 bytes differ from Pillow's"
        );
    }
}

#[test]
fn volume_matches_sam2() {
    whole_volume_matches(&medseg::cpu());
}

/// Stage by stage on the key and first tracked slice, then both passes over the whole golden
/// volume on `device`: every slice's low-res logits and the 3D mask against the reference's.
fn whole_volume_matches(device: &burn::tensor::Device) {
    let device = device.clone();
    let model = medsam2_random(&device);
    let mut g = Golden::open("golden/medsam2_volume.npz");
    let case = Case::read(&mut g);
    let input = |z: usize| normalised(&case.resized(z), &device);
    key_slice_stages(&model, &case, &mut g, &input);

    let [z, h, w] = case.dims;
    let ours = pass_logits(&model, z, case.key, case.model_box(), |s| Ok(input(s)), 128);
    let (theirs, shape) = g.f32("low_res");
    assert_eq!(shape, [2, z, 128, 128]);
    compare_passes("volume", &ours, &theirs, z);
    let iou = mask_iou(&volume_mask(&ours, z, h, w), &volume_mask(&theirs, z, h, w));
    println!("medsam2 3D mask IoU {iou:.5}");
    assert!(iou >= 0.99, "3D mask IoU {iou}");

    // A visit may end its pass (what `stop_after_empty` does): the tracker stops there, and
    // every slice it did visit is what the full run gave.
    let key = case.key;
    assert!(
        key >= 1 && key + 1 < z,
        "the golden key slice has neighbours both ways"
    );
    let plane = 128 * 128;
    let mut seen = Vec::new();
    let bbox = case.model_box();
    two_passes(
        &model,
        z,
        key,
        bbox,
        |s| Ok(input(s)),
        |p, s, heads: &HeadsOut| {
            let full = &ours[(p * z + s) * plane..(p * z + s + 1) * plane];
            close(
                &format!("stopped pass {p} slice {s}"),
                &heads.low_res,
                full,
                1e-4,
            );
            seen.push((p, s));
            let end = (p == 0 && s == key + 1) || (p == 1 && s == key - 1);
            Ok(if end {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        },
    )
    .unwrap();
    assert_eq!(seen, [(0, key), (0, key + 1), (1, key), (1, key - 1)]);
}

/// Both passes of `model` over `z` slices: each visited slice's low-res logits (`side`²) in a
/// `[2, z, side, side]` array, NaN where a pass did not go.
fn pass_logits(
    model: &Sam2,
    z: usize,
    key: usize,
    bbox: [f32; 4],
    input: impl FnMut(usize) -> medseg::Result<Tensor<4>>,
    side: usize,
) -> Vec<f32> {
    let plane = side * side;
    let mut ours = vec![f32::NAN; 2 * z * plane];
    two_passes(model, z, key, bbox, input, |p, s, heads: &HeadsOut| {
        ours[(p * z + s) * plane..(p * z + s + 1) * plane].copy_from_slice(&heads.low_res);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    ours
}

/// [`pass_logits`] against the reference's `[2, z, side, side]`: the same slices visited, each
/// visited slice's logits within 5e-3.
fn compare_passes(label: &str, ours: &[f32], theirs: &[f32], z: usize) {
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{label}: pass logits of another shape"
    );
    let plane = ours.len() / (2 * z);
    for (i, (a, b)) in ours.chunks(plane).zip(theirs.chunks(plane)).enumerate() {
        let (p, s) = (i / z, i % z);
        assert_eq!(
            a[0].is_nan(),
            b[0].is_nan(),
            "{label} pass {p} slice {s}: visited differs"
        );
        if !a[0].is_nan() {
            close(
                &format!("{label} pass {p} slice {s} low-res logits"),
                a,
                b,
                5e-3,
            );
        }
    }
}

/// The union over both passes of `logits > 0` at input resolution (bilinear from 128²).
fn volume_mask(low: &[f32], z: usize, h: usize, w: usize) -> Vec<bool> {
    let plane = 128 * 128;
    let mut mask = vec![false; z * h * w];
    for p in 0..2 {
        for s in 0..z {
            let l = &low[(p * z + s) * plane..(p * z + s + 1) * plane];
            if l[0].is_nan() {
                continue;
            }
            for (m, v) in mask[s * h * w..(s + 1) * h * w]
                .iter_mut()
                .zip(bilinear_resize(l, 128, 128, h, w))
            {
                *m |= v > 0.0;
            }
        }
    }
    mask
}

/// Stage by stage on the key slice and the first tracked one.
fn key_slice_stages(model: &Sam2, case: &Case, g: &mut Golden, input: &dyn Fn(usize) -> Tensor<4>) {
    let prompts = PromptBatch {
        points: Some(box_points(case.model_box())),
        ..Default::default()
    };
    let (sparse, _) = model.prompt_encoder.forward(&prompts);
    close(
        "key sparse prompt",
        &to_vec(sparse).unwrap(),
        &g.f32("key_sparse").0,
        1e-4,
    );

    let f = model.encode_image(input(case.key));
    let heads = model
        .sam_heads(
            model.condition(&f, None),
            &f,
            box_points(case.model_box()),
            None,
            false,
        )
        .unwrap();
    let mem = model.memory_features(&f, &heads, true);
    for (name, ours, golden, tol) in [
        ("key mask logits", heads.low_res.clone(), "key_mask", 5e-3),
        ("key IoU", heads.iou.clone(), "key_iou", 1e-4),
        (
            "key object score",
            vec![heads.object_score],
            "key_obj_score",
            1e-3,
        ),
        (
            "key memory features",
            channels(mem, 4).0,
            "key_maskmem",
            5e-3,
        ),
    ] {
        close(name, &ours, &g.f32(golden).0, tol);
    }

    let key_memory = model.encode_memory(&f, &heads, true).unwrap();
    let mut bank = ObjectOutputs::default();
    let key_output = TrackOutput {
        heads: heads.clone(),
        features: Some(key_memory.features),
    };
    bank.cond.insert(case.key, key_output);
    let next = case.key + 1;
    let f = model.encode_image(input(next));
    let tokens = bank.tokens(model, next, case.dims[0], false);
    assert_eq!(
        tokens.num_obj_ptr_tokens, 4,
        "the key slice's pointer, as 4 tokens of 64"
    );
    let pix = model.condition(&f, Some(&tokens));
    let conditioned = channels(pix.clone(), 8).0;
    close(
        "next conditioned features",
        &conditioned,
        &g.f32("next_conditioned").0,
        5e-3,
    );
    let heads = model.sam_heads(pix, &f, no_points(), None, true).unwrap();
    for (name, ours, golden, tol) in [
        ("next candidate masks", heads.candidates, "next_masks", 5e-3),
        ("next IoU", heads.iou, "next_iou", 1e-4),
        (
            "next object score",
            vec![heads.object_score],
            "next_obj_score",
            1e-3,
        ),
    ] {
        close(name, &ours, &g.f32(golden).0, tol);
    }
}

#[test]
fn segmenter_runs_medsam2_in_3d_and_2d_as_the_reference() {
    let device = medseg::cpu();
    let seg =
        Segmenter::from_state_dict(ModelFamily::MedSam2, &medsam2_state_dict(), &device).unwrap();
    assert_eq!(seg.family(), ModelFamily::MedSam2);
    assert!(seg.model().is_none() && seg.sam2().is_some());
    let mut g = Golden::open("golden/medsam2_volume.npz");
    let case = Case::read(&mut g);
    let [z, h, w] = case.dims;

    // 3D: both passes, union, largest component, against the reference's logits.
    let (vol, opts) = medsam2_golden_volume();
    let mut calls = Vec::new();
    let res = seg
        .segment_volume(&vol, &opts, &mut |d, t| calls.push((d, t)))
        .unwrap();
    assert_eq!(
        calls.last(),
        Some(&(z + 1, z + 1)),
        "every slice once, the key twice"
    );
    let mut theirs = volume_mask(&g.f32("low_res").0, z, h, w);
    medseg::volume::largest_component_with(
        &mut theirs,
        case.dims,
        medseg::volume::Connectivity::Full,
    );
    let iou = mask_iou(&res.mask, &theirs);
    println!("medsam2 segment_volume: 3D IoU {iou:.5} vs the reference's passes");
    assert!(iou >= 0.99, "3D IoU {iou}");
    assert_eq!(res.slices_run.len(), z);
    assert_eq!(res.key_prediction.low_res, 128);
    close(
        "segment_volume key logits",
        res.key_prediction.logits(0, 0),
        &g.f32("key_mask").0,
        5e-3,
    );

    stop_after_empty_ends_each_pass_where_the_object_is_gone(&seg, &vol, &opts, &res.mask);

    // 2D: the key slice alone through predict (the image predictor's single-mask rule).
    let key = case.slices[case.key * h * w..(case.key + 1) * h * w].to_vec();
    let image = Image::new(w, h, 1, key).unwrap();
    let pred = seg.segment(&image, case.bbox.map(f64::from)).unwrap();
    assert_eq!((pred.low_res, pred.size), (128, (h, w)));
    close(
        "2D key logits",
        pred.logits(0, 0),
        &g.f32("key_mask").0,
        5e-3,
    );
    let emb = seg.embed(&image).unwrap();
    let prompt = Prompt {
        multimask: true,
        ..Prompt::from_box(case.bbox.map(f64::from))
    };
    let multi = seg.predict(&emb, &prompt).unwrap();
    assert_eq!(multi.masks_per_prompt, 3);
    assert_eq!(multi.masks.len(), 3 * h * w);
    // Two boxes in one call: each entry is what the box alone gives (repeat_image).
    let other = [20.0, 30.0, 120.0, 110.0];
    let pair = Prompt {
        boxes: vec![case.bbox.map(f64::from), other],
        ..Default::default()
    };
    let both = seg.predict(&emb, &pair).unwrap();
    let alone = seg.predict(&emb, &Prompt::from_box(other)).unwrap();
    assert_eq!(both.batch, 2);
    close("batch entry 0", both.logits(0, 0), pred.logits(0, 0), 1e-4);
    close("batch entry 1", both.logits(1, 0), alone.logits(0, 0), 1e-4);
    // A mask input is 128 × 128 here; the 32 × 32 tensor alone is not an embedding.
    let sam_sized = Prompt {
        mask_input: Some(vec![0.0; 256 * 256]),
        ..Prompt::from_box(case.bbox.map(f64::from))
    };
    match seg.predict(&emb, &sam_sized) {
        Err(Error::InvalidPrompt(m)) => assert!(m.contains("expected 128x128"), "{m}"),
        other => panic!("expected InvalidPrompt, got {other:?}"),
    }
    let with_mask = Prompt {
        mask_input: Some(pred.logits(0, 0).to_vec()),
        ..Prompt::from_box(case.bbox.map(f64::from))
    };
    assert_eq!(seg.predict(&emb, &with_mask).unwrap().low_res, 128);
    match seg.embedding_from_tensor(emb.tensor().clone(), *emb.frame()) {
        Err(Error::InvalidEmbedding(m)) => assert!(m.contains("high-resolution"), "{m}"),
        other => panic!("expected InvalidEmbedding, got {:?}", other.map(|_| ())),
    }
}

/// `stop_after_empty`: each pass ends after that many empty slices in a row, and every slice
/// it did visit is what the full run gave there (tracking is causal): the slices the full
/// run's masks predict are the ones visited. The seeded model may empty no slice of the golden
/// volume; the run must then equal the full run (the stop itself is checked in
/// `whole_volume_matches`, the counting in `memory.rs`'s unit test, a real stop in
/// `volume3d.rs` on the chain rule).
fn stop_after_empty_ends_each_pass_where_the_object_is_gone(
    seg: &Segmenter,
    vol: &medseg::Volume,
    opts: &medseg::VolumeOptions,
    full_mask: &[bool],
) {
    let [z, h, w] = vol.dims;
    let plane = h * w;
    let keep = |stop| medseg::VolumeOptions {
        keep_pass_logits: true,
        stop_after_empty: stop,
        ..opts.clone()
    };
    let full = seg
        .segment_volume(vol, &keep(None), &mut |_, _| {})
        .unwrap();
    assert_eq!(full.mask, full_mask, "keeping the logits changes nothing");
    let logits = full.pass_logits.as_ref().unwrap();
    let empty = |p: usize, s: usize| {
        !logits[(p * z + s) * plane..][..plane]
            .iter()
            .any(|&v| v > 0.0)
    };
    let key = opts.key_slice;
    let orders: [Vec<usize>; 2] = [(key..z).collect(), (0..=key).rev().collect()];
    let empties = orders
        .iter()
        .enumerate()
        .map(|(p, o)| o.iter().filter(|&&s| empty(p, s)).count());
    let empties = empties.sum::<usize>();
    println!("stop_after_empty: the full run has {empties} empty slice visits");
    for n in [1, 2] {
        let mut expect = Vec::new();
        for (p, order) in orders.iter().enumerate() {
            let mut run = 0;
            for &s in order {
                if !(p == 1 && s == key) {
                    expect.push(s);
                }
                run = if empty(p, s) { run + 1 } else { 0 };
                if run >= n {
                    break;
                }
            }
        }
        let cut = seg
            .segment_volume(vol, &keep(Some(n)), &mut |_, _| {})
            .unwrap();
        assert_eq!(cut.slices_run, expect, "stop_after_empty {n}");
        let ours = cut.pass_logits.as_ref().unwrap();
        for (p, s) in (0..2).flat_map(|p| (0..z).map(move |s| (p, s))) {
            let at = (p * z + s) * plane;
            let (a, b) = (&ours[at..at + plane], &logits[at..at + plane]);
            if a[0].is_nan() {
                continue;
            }
            assert_eq!(
                a, b,
                "stop_after_empty {n}: pass {p} slice {s} differs from the full run"
            );
        }
        let inter = cut
            .mask
            .iter()
            .zip(full_mask)
            .filter(|(a, b)| **a && **b)
            .count();
        let sum = cut.mask.iter().chain(full_mask).filter(|&&v| v).count();
        let dice = 2.0 * inter as f64 / sum.max(1) as f64;
        println!(
            "stop_after_empty {n}: {} of {} slice visits, Dice {dice:.4} vs the full run",
            cut.slices_run.len(),
            full.slices_run.len()
        );
    }
}

#[test]
fn medsam2_weights_are_checked() {
    let device = medseg::cpu();
    let sd = medsam2_state_dict();
    let err = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &device).unwrap_err();
    assert!(
        err.to_string().contains("this is a medsam2 checkpoint"),
        "{err}"
    );
    let mut lite_as_medsam2 = StateDict::default();
    lite_as_medsam2.tensors.insert(
        "image_encoder.patch_embed.seq.0.c.weight".into(),
        sd.tensors["no_obj_ptr"].clone(),
    );
    let err =
        Segmenter::from_state_dict(ModelFamily::MedSam2, &lite_as_medsam2, &device).unwrap_err();
    assert!(
        err.to_string().contains("this is a lite-medsam checkpoint"),
        "{err}"
    );
    let mut missing = sd.clone();
    missing
        .tensors
        .remove("memory_attention.layers.2.cross_attn_image.k_proj.weight");
    match Segmenter::from_state_dict(ModelFamily::MedSam2, &missing, &device) {
        Err(Error::WeightsMismatch { details, .. }) => {
            assert!(details.contains("1 missing tensors: memory_attention.layers.2.cross_attn_image.k_proj.weight [256, 64]"), "{details}")
        }
        other => panic!("expected a weights mismatch, got {other:?}"),
    }
    let err = Segmenter::from_default_weights(ModelFamily::MedSam2, &device).unwrap_err();
    assert!(err.to_string().contains("MedSAM2_latest.pt"), "{err}");
}

/// The same checks on the wgpu backend (lavapipe in CI, ≈ 5 min on 2 cores): the stages of the
/// key and first tracked slice and every slice of both passes, at the CPU test's tolerances.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_whole_volume_matches_sam2() {
    whole_volume_matches(&medseg::wgpu());
}

/// Meta's SAM 2.1 Tiny at its native 1024² (`ModelFamily::Sam21Tiny`: the same network and
/// seeded weights, RoPE on a 64 × 64 grid) on 3 template slices through the frame's own input
/// and box: every slice's 256² logits in both passes against the official predictor.
#[test]
fn sam21_tiny_at_1024_matches_sam2() {
    let device = medseg::cpu();
    let seg =
        Segmenter::from_state_dict(ModelFamily::Sam21Tiny, &medsam2_state_dict(), &device).unwrap();
    let model = seg.sam2().expect("a SAM 2 family");
    assert_eq!(model.image_size, 1024);
    let mut g = Golden::open("golden/sam21_volume.npz");
    let case = Case::read(&mut g);
    let [z, h, w] = case.dims;
    let frame = seg.frame((h, w));
    let input = |s: usize| {
        let image = Image::new(w, h, 1, case.slices[s * h * w..(s + 1) * h * w].to_vec())?;
        let x = frame.input(&image)?;
        Ok(Tensor::from_data(
            TensorData::new(x.data, [1, 3, 1024, 1024]),
            &device,
        ))
    };
    let bbox = frame.box_to_model(case.bbox.map(f64::from));
    let ours = pass_logits(model, z, case.key, bbox, input, 256);
    let (theirs, shape) = g.f32("low_res");
    assert_eq!(shape, [2, z, 256, 256]);
    compare_passes("sam2.1 1024", &ours, &theirs, z);
}
