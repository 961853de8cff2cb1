//! MedSAM2's image trunk (SAM 2's Hiera-Tiny, issue #10) against the official `sam2==1.1.0`
//! code with seeded random weights (`tests/reference/make_medsam2_golden.py`), on the demo CT
//! slice at MedSAM2's 512² input: each of the four stage outputs, every 8th channel.
//!
//! Tolerance: max |Δ| ≤ 1e-3 per stage (the values reach a few units; fp32 rounding over 12
//! blocks is ~1e-5).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::model::common::Loader;
use medseg::model::hiera::{Hiera, HieraConfig};
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

fn every_8th_channel(t: Tensor<4>) -> (Vec<f32>, [usize; 4]) {
    let dims = t.dims();
    let plane = dims[2] * dims[3];
    let v = to_vec(t).unwrap();
    let kept = v
        .chunks_exact(plane)
        .step_by(8)
        .flatten()
        .copied()
        .collect();
    (kept, dims)
}

#[test]
fn hiera_tiny_matches_sam2() {
    let device = medseg::cpu();
    let layout = std::fs::read_to_string(fixtures().join("golden/hiera_t_layout.txt")).unwrap();
    let sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    let mut l = Loader::new(&sd, &device);
    let trunk = Hiera::load(&mut l, "image_encoder.trunk", &HieraConfig::tiny());
    l.finish("hiera-t")
        .expect("every trunk tensor used, none missing");

    let feats = trunk.forward(demo_input(&device));
    assert_eq!(feats.len(), 4);
    let mut g = Golden::open("golden/medsam2_trunk.npz");
    for (i, f) in feats.into_iter().enumerate() {
        let (ours, dims) = every_8th_channel(f);
        let side = 128 >> i;
        assert_eq!(dims, [1, 96 << i, side, side], "stage {i} shape");
        let (theirs, shape) = g.f32(&format!("level{i}_channels"));
        assert_eq!(
            shape,
            [1, (96 << i) / 8, side, side],
            "stage {i} golden shape"
        );
        let d = max_abs_diff(&ours, &theirs);
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!("hiera stage {i} {dims:?}: max |Δ| {d:.2e} (values up to {scale:.2})");
        assert!(d <= 1e-3, "stage {i}: max |Δ| {d}");
    }
}
