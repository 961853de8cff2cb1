//! DICOM series geometry and data integrity on crafted series (`tests/data/make_series.py`:
//! twelve copies of pydicom's MR_small, 4 mm apart, slice k with RescaleIntercept 10·k, each
//! folder altered one way), and NIfTI geometry/modality on headers altered from nibabel's file.

mod common;

use common::*;
use medseg::io::{self, ReadOptions, UnevenSlices};
use medseg::{Error, Modality, Volume};

fn series(case: &str) -> std::path::PathBuf {
    testdata(&format!("series/{case}"))
}

fn read(case: &str, uneven: UnevenSlices) -> medseg::Result<Volume> {
    io::read_volume_with(
        series(case),
        &ReadOptions {
            uneven_slices: uneven,
        },
    )
}

/// The DICOM error for a series folder (or a file in one), by default options.
fn refused(case: &str) -> String {
    match io::read_volume(series(case)) {
        Err(Error::Dicom { reason, .. }) => reason,
        other => panic!("{case}: expected a DICOM error, got {other:?}"),
    }
}

/// Slice `k` of the clean series holds MR_small + 10·k: which source slice is `vol`'s slice `z`?
fn source_offset(vol: &Volume, clean: &Volume, z: usize) -> f32 {
    let n = vol.slice_len();
    let d: Vec<f32> = (0..n)
        .map(|i| vol.data[z * n + i] - clean.data[i])
        .collect();
    assert!(
        d.iter().all(|&v| (v - d[0]).abs() < 1e-3),
        "slice {z} is not a shifted copy"
    );
    d[0]
}

fn col(vol: &Volume, c: usize) -> [f64; 3] {
    [vol.affine[0][c], vol.affine[1][c], vol.affine[2][c]]
}

fn close(a: [f64; 3], b: [f64; 3]) -> bool {
    a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn clean_series_and_enhanced_multiframe_give_the_true_affine() {
    let clean = io::read_volume(series("clean")).unwrap();
    assert_eq!(clean.dims, [12, 64, 64]);
    assert!(clean.notes.is_empty(), "{:?}", clean.notes);
    assert_eq!(clean.spacing, [4.0, 0.3125, 0.3125]);
    // LPS (x0, y0, 4k) → RAS (−x0, −y0, 4k).
    assert!(close(col(&clean, 2), [0.0, 0.0, 4.0]));
    assert!(close(col(&clean, 3), [83.9063, 91.2, 0.0]));
    for z in 0..12 {
        assert_eq!(source_offset(&clean, &clean, z), 10.0 * z as f32);
    }
    // Twelve frames with per-frame PlanePositionSequence: the same geometry, frame by frame.
    let mf = io::read_volume(series("enhanced/mf.dcm")).unwrap();
    assert_eq!(mf.dims, [12, 64, 64]);
    assert_eq!(mf.affine, clean.affine);
    assert!(mf.notes.is_empty(), "{:?}", mf.notes);
}

#[test]
fn a_missing_slice_is_refused_resampled_or_kept_with_a_note() {
    let e = refused("gap");
    assert!(
        e.contains("step of 8.000 mm between s04.dcm and s06.dcm"),
        "{e}"
    );
    let clean = io::read_volume(series("clean")).unwrap();
    let r = read("gap", UnevenSlices::Resample).unwrap();
    assert_eq!(r.dims, [12, 64, 64]);
    assert_eq!(r.affine, clean.affine);
    // The missing slice 5 is the mean of slices 4 and 6: offset 50.
    for z in 0..12 {
        assert_eq!(source_offset(&r, &clean, z), 10.0 * z as f32, "slice {z}");
    }
    assert!(
        r.notes[0].contains("resampled linearly onto 12 slices"),
        "{:?}",
        r.notes
    );
    let a = read("gap", UnevenSlices::AsIs).unwrap();
    assert_eq!(a.dims[0], 11);
    assert!(a.notes[0].contains("up to 4.00 mm off"), "{:?}", a.notes);
    // The same rule for the frames of an enhanced multi-frame object.
    let e = refused("enhanced_gap/mf.dcm");
    assert!(e.contains("mf.dcm frame 6 and mf.dcm frame 7"), "{e}");
}

#[test]
fn uneven_steps_are_refused() {
    let e = refused("uneven");
    assert!(
        e.contains("step of 6.000 mm between s05.dcm and s06.dcm"),
        "{e}"
    );
    assert!(e.contains("up to 2.00 mm off"), "{e}");
    // Resampled: slice 6 (at 24 mm) lies between s05 (20 mm) and s06 (26 mm): 2/3 of the way.
    let clean = io::read_volume(series("clean")).unwrap();
    let r = read("uneven", UnevenSlices::Resample).unwrap();
    assert_eq!(r.dims[0], 12);
    let want = 50.0 + (60.0 - 50.0) * (4.0 / 6.0);
    assert!((source_offset(&r, &clean, 6) - want).abs() < 1e-3);
}

#[test]
fn duplicates_are_kept_once_conflicts_refused() {
    let d = io::read_volume(series("duplicate")).unwrap();
    let clean = io::read_volume(series("clean")).unwrap();
    assert_eq!(d.dims, clean.dims);
    assert_eq!(d.data, clean.data);
    assert!(
        d.notes[0].contains("s06b.dcm duplicates s06.dcm"),
        "{:?}",
        d.notes
    );
    let e = refused("conflict");
    assert!(
        e.contains("s06.dcm and s06b.dcm are both at position"),
        "{e}"
    );
}

#[test]
fn gantry_tilt_keeps_the_shear_in_the_affine_and_the_nifti() {
    let t = io::read_volume(series("tilt")).unwrap();
    // LPS step (0, 0.3, 4) → RAS (0, −0.3, 4); the voxel volume is unchanged by the shear.
    assert!(close(col(&t, 2), [0.0, -0.3, 4.0]), "{:?}", t.affine);
    assert!((t.voxel_ml() - 0.3125 * 0.3125 * 4.0 / 1000.0).abs() < 1e-12);
    assert!(t.notes[0].contains("gantry tilt 4.29°"), "{:?}", t.notes);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.nii.gz");
    io::nifti::write_mask(&out, &vec![true; t.data.len()], &t).unwrap();
    let back = io::read_volume(&out).unwrap();
    for r in 0..3 {
        for c in 0..4 {
            assert!((back.affine[r][c] - t.affine[r][c]).abs() < 1e-4, "{r},{c}");
        }
    }
}

#[test]
fn inconsistent_series_name_the_file() {
    let e = refused("noipp");
    assert!(e.contains("missing in 1 of 12 images (s03.dcm)"), "{e}");
    let e = refused("orientation");
    assert!(
        e.starts_with("s04.dcm has ImageOrientationPatient [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]"),
        "{e}"
    );
}

#[test]
fn a_report_in_the_folder_is_skipped_with_a_note() {
    let v = io::read_volume(series("with_sr")).unwrap();
    assert_eq!(v.dims, [12, 64, 64]);
    assert!(v.notes[0].contains("report.dcm"), "{:?}", v.notes);
    let e = refused("with_sr/report.dcm");
    assert!(e.contains("no pixel data"), "{e}");
}

#[test]
fn monochrome1_is_inverted_identically_on_every_slice() {
    let m1 = io::read_volume(series("mono1")).unwrap();
    let m2 = io::read_volume(series("clean")).unwrap();
    // One mapping v → c − v for the whole series (per-slice min + max made c differ by 20 per
    // slice here), with the brightest stored value becoming the darkest.
    let c = m1.data[0] + m2.data[0];
    assert!(m1
        .data
        .iter()
        .zip(&m2.data)
        .all(|(a, b)| (a + b - c).abs() < 1e-3));
    let (lo, hi) = medseg::volume::value_range(&m2.data);
    assert_eq!(c, lo + hi);
}

/// anatomical.nii with its header altered, written as float32 NIfTI and read back.
/// The NIfTI header a NIfTI volume keeps.
fn nifti_header(v: &mut Volume) -> &mut nifti::NiftiHeader {
    match &mut v.source {
        medseg::volume::Source::Nifti(h) => h,
        other => panic!("a NIfTI volume keeps its header, not {other:?}"),
    }
}

fn altered_nifti(dir: &std::path::Path, edit: impl FnOnce(&mut Volume)) -> Volume {
    let mut vol = io::read_volume(testdata("anatomical.nii")).unwrap();
    edit(&mut vol);
    let out = dir.join("altered.nii.gz");
    io::nifti::write_volume(&out, &vol).unwrap();
    io::read_volume(&out).unwrap()
}

#[test]
fn nifti_volume_follows_the_kept_affine() {
    let dir = tempfile::tempdir().unwrap();
    // sform with 2 × 3 × 4 mm voxels, pixdim 1: spacing and mL from the sform.
    let v = altered_nifti(dir.path(), |v| {
        let h = nifti_header(v);
        h.sform_code = 1;
        h.qform_code = 0;
        h.srow_x = [2.0, 0.0, 0.0, 1.0];
        h.srow_y = [0.0, 3.0, 0.0, 2.0];
        h.srow_z = [0.0, 0.0, 4.0, 3.0];
        h.pixdim = [1.0; 8];
    });
    assert_eq!(v.spacing, [4.0, 3.0, 2.0]);
    assert!((v.voxel_ml() - 0.024).abs() < 1e-12);
    assert!(
        v.notes.iter().any(|n| n.contains("pixdim")),
        "{:?}",
        v.notes
    );
    // sform ≠ qform: the sform is used (as nibabel), and the note says so.
    let v = altered_nifti(dir.path(), |v| {
        let h = nifti_header(v);
        h.sform_code = 1;
        h.qform_code = 1;
        h.quatern_b = 0.0;
        h.quatern_c = 0.0;
        h.quatern_d = 0.0;
        h.srow_x = [2.0, 0.0, 0.0, 0.0];
        h.srow_y = [0.0, 2.0, 0.0, 0.0];
        h.srow_z = [0.0, 0.0, 2.0, 0.0];
        h.pixdim = [1.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0];
    });
    assert_eq!(v.spacing, [2.0, 2.0, 2.0]);
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("sform and qform disagree")),
        "{:?}",
        v.notes
    );
}

#[test]
fn nifti_modality_comes_from_the_header_or_hounsfield_air() {
    let dir = tempfile::tempdir().unwrap();
    // nibabel's anatomical.nii is an MR whose values reach −610 (the old rule, min < −100,
    // took it for CT).
    let v = altered_nifti(dir.path(), |_| {});
    assert_eq!(v.modality, Modality::Mr);
    assert!(
        v.notes.iter().any(|n| n.contains("modality MR assumed")),
        "{:?}",
        v.notes
    );
    // Said by the user: the assumption's note goes, the others stay.
    let mut given = v.clone();
    given.set_modality(Modality::Ct);
    assert_eq!(given.modality, Modality::Ct);
    assert!(
        !given.notes.iter().any(|n| n.contains("assumed")),
        "{:?}",
        given.notes
    );
    // Air around the head in a tenth of the voxels: CT.
    let v = altered_nifti(dir.path(), |v| {
        v.data.iter_mut().step_by(10).for_each(|x| *x = -1000.0)
    });
    assert_eq!(v.modality, Modality::Ct);
    let v = altered_nifti(dir.path(), |v| {
        nifti_header(v).descrip = b"CT head, brain window".to_vec();
    });
    assert_eq!(v.modality, Modality::Ct);
    assert!(
        v.notes.iter().any(|n| n.contains("from the NIfTI header")),
        "{:?}",
        v.notes
    );
}

#[test]
fn nifti_outputs_need_a_nifti_name() {
    let vol = io::read_volume(testdata("anatomical.nii")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.png");
    match io::nifti::write_mask(&out, &vec![false; vol.data.len()], &vol) {
        Err(Error::Output { reason, .. }) => assert!(reason.contains(".nii.gz"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!out.exists() && !dir.path().join("mask.nii").exists());
}

#[test]
fn the_default_voxel_limit_refuses_a_billion_voxels_from_the_header() {
    // A NIfTI header declaring 1000³ int16 (a 2 MB .nii.gz of zeros took 9.8 GB before): refused
    // from the header, before any data is inflated. (Assumes MEDSEG_MAX_VOXELS is not set.)
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3i16, 1000, 1000, 1000, 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&4i16.to_le_bytes());
    h[72..74].copy_from_slice(&16i16.to_le_bytes());
    for i in 0..8 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("billion.nii");
    std::fs::write(&p, &h).unwrap();
    match io::read_volume(&p) {
        Err(Error::InvalidImage(m)) => assert!(m.contains("MEDSEG_MAX_VOXELS"), "{m}"),
        other => panic!("{other:?}"),
    }
}
