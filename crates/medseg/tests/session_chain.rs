//! The 3D session on LiteMedSAM (the chain rule, `propagate/chain_tracker.rs`) with the
//! official weights on the MedSAM2 parity test's template slices: one box and a propagation
//! both ways give exactly `segment_volume`'s chain; a positive click beyond the mask on a
//! tracked slice makes that slice a prompted one and the chain re-runs outward from it, the
//! slices between the key and it (and below the key) untouched.

mod common;

use common::{lite_weights, medsam2_golden_volume};
use medseg::{Direction, Error, ModelFamily, Segmenter, SessionOptions, VolumeSession};

fn slice_masks(s: &VolumeSession, nz: usize) -> Vec<Option<Vec<bool>>> {
    (0..nz)
        .map(|z| s.slice_prediction(1, z).map(|p| p.mask))
        .collect()
}

#[test]
fn chain_session_matches_segment_volume_and_re_runs_from_a_correction() {
    let seg =
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap();
    let (vol, opts) = medsam2_golden_volume();
    let [nz, h, w] = vol.dims;
    let key = opts.key_slice;
    let sopts = SessionOptions {
        intensity: opts.intensity,
        ..Default::default()
    };
    let mut s = VolumeSession::new(&seg, &vol, &sopts).unwrap();
    s.add_new_points_or_box(key, 1, &[], Some(opts.bbox), true)
        .unwrap();
    s.propagate(Direction::Both, None, None, &mut |_| {})
        .unwrap();

    let reference = seg.segment_volume(&vol, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(
        s.object_mask(1).unwrap(),
        reference.mask,
        "one box: segment_volume's chain"
    );
    let mut ran = reference.slices_run.clone();
    ran.sort_unstable();
    assert_eq!(s.slices_with_result(1), ran);
    let top = *ran.last().unwrap();
    assert!(top >= key + 3, "the chain reaches slice {top}");

    // A positive click right of the mask on slice key + 2 (mid-height of its bounding box).
    let before = slice_masks(&s, nz);
    let c = key + 2;
    let m = before[c].clone().unwrap();
    let (xs, ys): (Vec<usize>, Vec<usize>) =
        (0..h * w).filter(|&i| m[i]).map(|i| (i % w, i / w)).unzip();
    let (x1, y0, y1) = (
        *xs.iter().max().unwrap(),
        *ys.iter().min().unwrap(),
        *ys.iter().max().unwrap(),
    );
    let click = [((x1 + 12).min(w - 1)) as f64, ((y0 + y1) / 2) as f64];
    let refined = s
        .add_new_points_or_box(c, 1, &[(click, 1)], None, false)
        .unwrap();
    assert_ne!(refined.mask, m, "the click changes slice {c}");
    s.propagate(Direction::Both, None, None, &mut |_| {})
        .unwrap();
    let after = slice_masks(&s, nz);
    assert_eq!(
        after[c].as_ref(),
        Some(&refined.mask),
        "the corrected slice keeps its mask"
    );
    for z in (0..c).filter(|&z| z != key) {
        assert_eq!(
            after[z], before[z],
            "slice {z} (not above the correction) unchanged"
        );
    }
    assert!(
        after[c + 1].is_some(),
        "the chain goes on above the correction"
    );
    assert_ne!(
        after[c + 1],
        before[c + 1],
        "slice {} follows the corrected slice",
        c + 1
    );

    // Clearing the correction's prompt: the next propagation chains through it again.
    s.clear_all_prompts_in_slice(c, 1).unwrap();
    s.propagate(Direction::Both, None, None, &mut |_| {})
        .unwrap();
    assert_eq!(slice_masks(&s, nz), before, "back to the one-box chain");

    match s.add_new_mask(c, 1, &vec![false; h * w]) {
        Err(Error::InvalidPrompt(m)) => assert!(m.contains("MedSAM2"), "{m}"),
        other => panic!("a mask prompt on LiteMedSAM: {other:?}"),
    }
    match s.add_new_points_or_box(c, 1, &[], Some([1.0, 1.0, 20.0, 20.0]), false) {
        Err(Error::InvalidPrompt(m)) => assert!(m.contains("must come first"), "{m}"),
        other => panic!("a box after points: {other:?}"),
    }
}
