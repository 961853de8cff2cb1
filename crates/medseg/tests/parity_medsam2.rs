//! MedSAM2 (SAM 2.1 Hiera-Tiny at 512², issue #10) stage by stage against the official
//! `sam2==1.1.0` code with seeded random weights (`tests/reference/make_medsam2_golden.py`),
//! on the demo CT slice at MedSAM2's 512² input. So far: the image encoder — the trunk's four
//! stage outputs (every 8th channel), the neck's kept levels and their positional encodings
//! (every 32nd channel).
//!
//! Tolerance: max |Δ| ≤ 1e-3 per stage (the values reach about ten; fp32 rounding over the
//! 12 blocks is ~1e-5).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::model::common::Loader;
use medseg::model::sam2_image_encoder::Sam2ImageEncoder;
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The demo slice as MedSAM2's script feeds it: /255, three channels, ImageNet mean/std.
fn demo_input(device: &burn::tensor::Device) -> Tensor<4> {
    let grey = read_png_grey("images/demo_ct.png");
    assert_eq!(grey.len(), 512 * 512);
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
