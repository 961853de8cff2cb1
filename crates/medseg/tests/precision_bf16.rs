//! `Precision::Bf16` against `f32` on every golden case of each family, and the fallback where
//! bf16 cannot run. Floor: mask IoU ≥ 0.98 against the `f32` masks (issue #12's goal) on every
//! case. The tightest is LiteMedSAM's `lite_ct_small` (a 60-pixel box on a small CT) at 0.982:
//! its error is mostly the weights' rounding to bf16 (rounding only the weights, in `f32`
//! arithmetic, gave 0.980), so a change to the bf16 path that moves it shows here first.
//!
//! On a CPU with AVX-512 BF16 the bf16 segmenter must report `Bf16`, its logits must differ
//! from `f32`'s (the kernel really ran) and its masks must agree; on a CPU without it, the
//! segmenter must report `F32` and give `f32`'s outputs bit for bit. Either way, switching
//! back to `F32` restores the exact path. The printed figures are docs/precision.md's table.

mod common;

use common::*;
use medseg::model::bf16;
use medseg::{ModelFamily, Precision, Segmenter};

/// What bf16 does on this machine.
fn expected() -> Precision {
    check_off();
    if bf16::supported() {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// `MEDSEG_BF16_CHECK=off`: these tests hold the bf16 kernel to `f32` on every CPU that has
/// one, also where the one-time speed check would keep `f32` (read once, before the first
/// bf16 segmenter of the process: every test calls this first, through `in_bf16`).
fn check_off() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("MEDSEG_BF16_CHECK", "off"));
}

/// `seg` in bf16, checked to run in what this machine allows.
fn in_bf16(seg: &Segmenter) -> Segmenter {
    check_off();
    let out = seg.clone().with_precision(Precision::Bf16);
    assert_eq!(
        out.precision(),
        expected(),
        "bf16 where the CPU has AVX-512 BF16, else f32"
    );
    assert_eq!(
        seg.precision(),
        Precision::F32,
        "the f32 segmenter is untouched"
    );
    out
}

/// Compare the two segmenters' 2D results on every golden case of `model` (mask IoU ≥
/// `floor`); returns the largest logit difference.
fn compare_2d(model: &str, f32_seg: &Segmenter, bf16_seg: &Segmenter, floor: f64) -> f32 {
    let mut worst = 0.0f32;
    for case in golden_cases(model) {
        let a = f32_seg.segment(&case.image, case.bbox).unwrap();
        let b = bf16_seg.segment(&case.image, case.bbox).unwrap();
        let d = max_abs_diff(a.logits(0, 0), b.logits(0, 0));
        let scale = a.logits(0, 0).iter().fold(0f32, |m, v| m.max(v.abs()));
        let iou = mask_iou(a.mask(0, 0), b.mask(0, 0));
        let positive = |p: &medseg::Prediction| -> Vec<bool> {
            p.logits(0, 0).iter().map(|&v| v > 0.0).collect()
        };
        let low_iou = mask_iou(&positive(&a), &positive(&b));
        println!(
            "{model} {}: bf16 vs f32 mask IoU {iou:.5} (low-res {low_iou:.5}), low-res logits \
             max |Δ| {d:.3e} (values up to {scale:.1})",
            case.name
        );
        assert!(
            iou >= floor,
            "{model} {}: bf16 mask IoU {iou} < {floor}",
            case.name
        );
        worst = worst.max(d);
    }
    worst
}

fn check_ran(model: &str, worst: f32) {
    match expected() {
        Precision::Bf16 => assert!(worst > 0.0, "{model}: bf16 gave f32's logits exactly"),
        Precision::F32 => assert_eq!(worst, 0.0, "{model}: the f32 fallback is not f32"),
    }
}

#[test]
fn lite_medsam_bf16_masks_match_f32_on_every_golden_case() {
    let seg =
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap();
    let bf = in_bf16(&seg);
    check_ran("lite-medsam", compare_2d("lite-medsam", &seg, &bf, 0.98));

    // Back to f32: the exact path again, bit for bit.
    let back = bf.with_precision(Precision::F32);
    assert_eq!(back.precision(), Precision::F32);
    let case = golden_cases("lite-medsam").remove(0);
    let a = seg.segment(&case.image, case.bbox).unwrap();
    let b = back.segment(&case.image, case.bbox).unwrap();
    assert_eq!(a.logits(0, 0), b.logits(0, 0), "f32 after bf16 is not f32");
}

#[test]
fn vit_b_bf16_masks_match_f32_on_the_golden_case() {
    let seg = Segmenter::from_state_dict(
        ModelFamily::MedSam,
        &random_vit_b_state_dict(),
        &medseg::cpu(),
    )
    .unwrap();
    let bf = in_bf16(&seg);
    check_ran("medsam", compare_2d("medsam", &seg, &bf, 0.98));
}

#[test]
fn medsam2_bf16_volume_matches_f32() {
    let seg =
        Segmenter::from_state_dict(ModelFamily::MedSam2, &medsam2_state_dict(), &medseg::cpu())
            .unwrap();
    let bf = in_bf16(&seg);
    let (vol, opts) = medsam2_golden_volume();
    let a = seg.segment_volume(&vol, &opts, &mut |_, _| {}).unwrap();
    let b = bf.segment_volume(&vol, &opts, &mut |_, _| {}).unwrap();
    let iou = mask_iou(&a.mask, &b.mask);
    let d = max_abs_diff(a.key_prediction.logits(0, 0), b.key_prediction.logits(0, 0));
    let voxels = |m: &[bool]| m.iter().filter(|&&v| v).count();
    println!(
        "medsam2 volume: bf16 vs f32 3D IoU {iou:.5} ({} vs {} voxels), key slice logits max \
         |Δ| {d:.3e}",
        voxels(&b.mask),
        voxels(&a.mask)
    );
    assert!(
        voxels(&a.mask) > 0,
        "the f32 volume is empty: nothing compared"
    );
    assert!(iou >= 0.98, "MedSAM2 bf16 3D IoU {iou} < 0.98");
    check_ran("medsam2", d);
}

/// bf16 is a CPU kernel: a segmenter on the GPU stays in f32 (and says so), outputs unchanged.
#[cfg(feature = "wgpu")]
#[test]
fn bf16_on_wgpu_falls_back_to_f32() {
    let sd = medseg::weights::StateDict::load(lite_weights()).unwrap();
    let gpu = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &medseg::wgpu()).unwrap();
    let bf = gpu.clone().with_precision(Precision::Bf16);
    assert_eq!(bf.precision(), Precision::F32);
    let case = golden_cases("lite-medsam").remove(0);
    let a = gpu.segment(&case.image, case.bbox).unwrap();
    let b = bf.segment(&case.image, case.bbox).unwrap();
    assert_eq!(a.logits(0, 0), b.logits(0, 0));
}
