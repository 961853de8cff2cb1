//! The wgpu backend against the CPU backend (run in CI on Debian's lavapipe software Vulkan):
//! LiteMedSAM's prompt encoder + mask decoder on a golden embedding, and the model's building
//! blocks on small shapes.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medseg::model::{Points, PromptBatch};
use medseg::segmenter::to_vec;
use medseg::{ModelFamily, Segmenter};

#[test]
fn wgpu_decoder_matches_cpu() {
    let sd = medseg::weights::StateDict::load(lite_weights()).unwrap();
    let cpu = medseg::cpu();
    let gpu = medseg::wgpu();
    let on_cpu = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &cpu).unwrap();
    let on_gpu = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &gpu).unwrap();
    let mut g = Golden::open("golden/lite_demo_ct.npz");
    let (emb, _) = g.f32("embedding");
    let (box_model, _) = g.f32("box_model");
    let batch = PromptBatch {
        boxes: Some(vec![
            [box_model[0], box_model[1], box_model[2], box_model[3]],
            [10.0, 20.0, 200.0, 180.0],
        ]),
        points: Some(Points {
            coords: vec![[100.0, 150.0], [60.0, 60.0], [120.0, 150.0], [30.0, 40.0]],
            labels: vec![1, 0, 1, 1],
            per_prompt: 2,
        }),
        masks: None,
    };
    let run = |seg: &Segmenter, dev: &burn::tensor::Device| {
        let e = Tensor::<4>::from_data(TensorData::new(emb.clone(), [1, 256, 64, 64]), dev);
        let (m, i) = seg.model().expect("a SAM family").decode(e, &batch);
        (to_vec(m).unwrap(), to_vec(i).unwrap())
    };
    let (mc, ic) = run(&on_cpu, &cpu);
    let (mg, ig) = run(&on_gpu, &gpu);
    let dm = max_abs_diff(&mc, &mg);
    let di = max_abs_diff(&ic, &ig);
    println!("wgpu vs cpu: logits max |Δ| {dm:.2e}, IoU max |Δ| {di:.2e}");
    assert!(dm <= 5e-3 && di <= 1e-3, "wgpu differs from cpu: {dm} {di}");
}

#[test]
fn wgpu_tiny_vit_stage_matches_cpu() {
    // A full LiteMedSAM encoder pass on a small synthetic image is the "small shape" here:
    // 256² is the model's only input size.
    let sd = medseg::weights::StateDict::load(lite_weights()).unwrap();
    let cpu = medseg::cpu();
    let gpu = medseg::wgpu();
    let on_cpu = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &cpu).unwrap();
    let on_gpu = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &gpu).unwrap();
    let mut g = Golden::open("golden/lite_mr_small.npz");
    let (input, _) = g.f32("input");
    let x = |d: &burn::tensor::Device| {
        Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, 256, 256]), d)
    };
    let ec = to_vec(on_cpu.model().expect("a SAM family").embed(x(&cpu))).unwrap();
    let eg = to_vec(on_gpu.model().expect("a SAM family").embed(x(&gpu))).unwrap();
    let d = max_abs_diff(&ec, &eg);
    println!("wgpu vs cpu: TinyViT embedding max |Δ| {d:.2e}");
    assert!(d <= 5e-3, "wgpu encoder differs from cpu by {d}");
}
