//! The resamplers against OpenCV (`INTER_AREA`, longest side to 256) and scikit-image
//! (`resize(order=3, anti_aliasing=True, preserve_range=True).astype(uint8)`), to the grey level,
//! on random and smoothed images: shrinking by integer and non-integer factors, enlarging,
//! grey and RGB.

mod common;

use common::*;
use medseg::preprocess::{resize_area_u8, skimage_resize_u8};

fn compare(name: &str, ours: &[u8], theirs: &[u8]) -> usize {
    assert_eq!(ours.len(), theirs.len(), "{name}: size");
    let bad = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap_or(0);
    println!(
        "{name}: {bad} of {} values differ (max {worst})",
        ours.len()
    );
    bad
}

#[test]
fn inter_area_matches_opencv() {
    let mut g = Golden::open("golden/resize_cases.npz");
    let mut total = 0;
    for i in 0.. {
        for cn in [1usize, 3] {
            let key = format!("area_{i}_{cn}_in");
            let f = std::fs::File::open(fixtures().join("golden/resize_cases.npz")).unwrap();
            let mut r = ndarray_npy::NpzReader::new(f).unwrap();
            if !r
                .names()
                .unwrap()
                .iter()
                .any(|n| n.trim_end_matches(".npy") == key)
            {
                assert!(i > 10, "expected the resize cases");
                assert_eq!(total, 0, "INTER_AREA differs from OpenCV");
                return;
            }
            let (src, s) = g.u8(&key);
            let (dst, d) = g.u8(&format!("area_{i}_{cn}_out"));
            let ours = resize_area_u8(&src, s[0], s[1], cn, d[0], d[1]);
            total += compare(
                &format!("area {}x{}x{cn} -> {}x{}", s[0], s[1], d[0], d[1]),
                &ours,
                &dst,
            );
        }
    }
}

#[test]
fn cubic_resize_matches_skimage() {
    let mut g = Golden::open("golden/resize_cases.npz");
    let mut total = 0;
    for i in 0..5 {
        let (src, s) = g.u8(&format!("sk_{i}_in"));
        let (dst, d) = g.u8(&format!("sk_{i}_out"));
        let ours = skimage_resize_u8(&src, s[0], s[1], 3, d[0], d[1]);
        total += compare(
            &format!("skimage {}x{} -> {}x{}", s[0], s[1], d[0], d[1]),
            &ours,
            &dst,
        );
    }
    assert_eq!(total, 0, "cubic resize differs from scikit-image");
}
