//! The 3D session ([`medseg::VolumeSession`]) against SAM 2's video predictor (`sam2==1.1.0`)
//! step by step: a box, propagation both ways, a negative click where the mask is wrong, a
//! positive click on another slice, a second object with a box and a click, a mask prompt for a
//! third, a partial propagation, clearing a slice's prompts, removing an object, propagating
//! again. Golden outputs: `tests/reference/make_medsam2_session.py`, the parity tests' seeded
//! weights, on the template slices of `golden/medsam2_volume.npz`. Run both with corrections as
//! conditioning slices (medseg's default) and with upstream's default.

mod common;

use common::{medsam2_golden_volume, medsam2_state_dict, Golden};
use medseg::{Direction, ModelFamily, Segmenter, SessionOptions, VolumeSession};
use serde_json::Value;

/// Low-res logits (every 4th pixel) within this of upstream's, on every slice after every step.
const TOL: f32 = 5e-3;

#[test]
fn session_matches_sam2_with_corrections_as_conditioning() {
    replay("cond_", true);
}

#[test]
fn session_matches_sam2_with_upstreams_default() {
    replay("plain_", false);
}

fn replay(prefix: &str, as_cond: bool) {
    let seg =
        Segmenter::from_state_dict(ModelFamily::MedSam2, &medsam2_state_dict(), &medseg::cpu())
            .unwrap();
    let (vol, vopts) = medsam2_golden_volume();
    let opts = SessionOptions {
        intensity: vopts.intensity,
        corrections_as_conditioning: as_cond,
        ..Default::default()
    };
    let mut s = VolumeSession::new(&seg, &vol, &opts).unwrap();
    let mut g = Golden::open("golden/medsam2_session.npz");
    let (mask3, _) = g.u8("mask3");
    let mask3: Vec<bool> = mask3.iter().map(|&v| v != 0).collect();
    let steps = g.i32(&format!("{prefix}steps"))[0] as usize;
    assert!(steps >= 15, "the scenario has {steps} steps");
    for k in 0..steps {
        let (op, _) = g.u8(&format!("{prefix}{k}_op"));
        let op: Value = serde_json::from_slice(&op).unwrap();
        let visited = apply(&mut s, &op, &mask3);
        let label = format!("{prefix}{k} {}", op["op"]);
        if let Some(v) = visited {
            let theirs = g.i32(&format!("{prefix}{k}_visited"));
            let theirs: Vec<usize> = theirs.iter().map(|&t| t as usize).collect();
            assert_eq!(v, theirs, "{label}: slices visited");
        }
        compare(&s, &mut g, prefix, k, &label);
    }
}

/// Apply one scripted step; a propagation returns the slices it visited.
fn apply(s: &mut VolumeSession, op: &Value, mask3: &[bool]) -> Option<Vec<usize>> {
    let num = |k: &str| op[k].as_u64().map(|v| v as usize);
    let slice = num("slice").unwrap_or(0);
    let obj = num("obj").unwrap_or(0) as u32;
    match op["op"].as_str().unwrap() {
        "box" => {
            let b: Vec<f64> = serde_json::from_value(op["box"].clone()).unwrap();
            s.add_new_points_or_box(slice, obj, &[], Some([b[0], b[1], b[2], b[3]]), true)
                .unwrap();
        }
        "points" => {
            let pts: Vec<[f64; 2]> = serde_json::from_value(op["points"].clone()).unwrap();
            let labels: Vec<i64> = serde_json::from_value(op["labels"].clone()).unwrap();
            let clicks: Vec<([f64; 2], i64)> = pts.into_iter().zip(labels).collect();
            let clear = op["clear"].as_bool().unwrap();
            s.add_new_points_or_box(slice, obj, &clicks, None, clear)
                .unwrap();
        }
        "mask" => {
            s.add_new_mask(slice, obj, mask3).unwrap();
        }
        "propagate" => {
            let dir = if op["reverse"].as_bool().unwrap() {
                Direction::Backward
            } else {
                Direction::Forward
            };
            return Some(
                s.propagate(dir, num("start"), num("max"), &mut |_| {})
                    .unwrap(),
            );
        }
        "clear" => s.clear_all_prompts_in_slice(slice, obj).unwrap(),
        "remove" => s.remove_object(obj).unwrap(),
        other => panic!("unknown step {other}"),
    }
    None
}

/// Every object's current logits on every slice against upstream's after step `k`.
fn compare(s: &VolumeSession, g: &mut Golden, prefix: &str, k: usize, label: &str) {
    let ids: Vec<u32> = g
        .i32(&format!("{prefix}{k}_ids"))
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(s.object_ids(), ids, "{label}: objects");
    let (theirs, shape) = g.f32(&format!("{prefix}{k}_logits"));
    let fg = g.i32(&format!("{prefix}{k}_fg"));
    let z = shape[1];
    for (i, &id) in ids.iter().enumerate() {
        for t in 0..z {
            let at = (i * z + t) * 32 * 32;
            let theirs = &theirs[at..at + 32 * 32];
            let ours = s.slice_prediction(id, t);
            assert_eq!(
                ours.is_some(),
                !theirs[0].is_nan(),
                "{label}: object {id} slice {t} has a result"
            );
            let Some(ours) = ours else { continue };
            let sub: Vec<f32> = (0..32)
                .flat_map(|y| (0..32).map(move |x| (y * 4, x * 4)))
                .map(|(y, x)| ours.low_res_logits[y * 128 + x])
                .collect();
            let d = common::max_abs_diff(&sub, theirs);
            assert!(
                d <= TOL,
                "{label}: object {id} slice {t} logits max |Δ| {d}"
            );
            let ours_fg = ours.low_res_logits.iter().filter(|&&v| v > 0.0).count() as i64;
            let theirs_fg = fg[i * z + t] as i64;
            assert!(
                (ours_fg - theirs_fg).abs() <= 2,
                "{label}: object {id} slice {t}: {ours_fg} pixels > 0, upstream {theirs_fg}"
            );
        }
    }
}
