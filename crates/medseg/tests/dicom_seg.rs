//! DICOM SEG out and back in, on the crafted series of `tests/data/make_series.py` (twelve
//! 64×64 MR slices 4 mm apart; shuffled file names, a tilted stack, a duplicate, an enhanced
//! multi-frame object) — and hostile SEGs refused with their reason. highdicom reads the same
//! files independently in `bindings/python/tests/test_seg.py`.

mod common;

use common::*;
use dicom_core::value::{PrimitiveValue, C};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use medseg::io::mask::{write_mask, MaskInfo};
use medseg::io::segment::{Code, Segment};
use medseg::io::{self, ReadOptions, UnevenSlices};
use medseg::Volume;
use std::path::{Path, PathBuf};

fn series(case: &str) -> PathBuf {
    testdata(&format!("series/{case}"))
}

/// A blob that moves with the slice: rows 10+z..30, columns 20..40-z, on slices 3..=7.
fn blob(vol: &Volume) -> Vec<bool> {
    let [nz, ny, nx] = vol.dims;
    (0..nz * ny * nx)
        .map(|i| {
            let (z, y, x) = (i / (ny * nx), i / nx % ny, i % nx);
            (3..=7).contains(&z) && (10 + z..30).contains(&y) && (20..40 - z).contains(&x)
        })
        .collect()
}

fn write(dest: &Path, mask: &[bool], vol: &Volume, all_frames: bool) {
    let info = MaskInfo {
        segment: Segment {
            property_type: Code::infarct(),
            ..Segment::by_model("LiteMedSAM", "00112233445566778899")
        },
        all_frames,
    };
    write_mask::<&Path>(dest, mask, vol, 0, &[], &info).unwrap();
}

#[test]
fn a_seg_round_trips_on_every_series_layout() {
    let dir = tempfile::tempdir().unwrap();
    for case in [
        "clean",
        "shuffled",
        "tilt",
        "duplicate",
        "enhanced",
        "sagittal",
    ] {
        let vol = io::read_volume(series(case)).unwrap();
        let mask = blob(&vol);
        let dest = dir.path().join(format!("{case}.dcm"));
        write(&dest, &mask, &vol, false);
        let back = io::read_seg(&dest, &vol).unwrap();
        assert_eq!(back.masks.len(), 1, "{case}");
        assert!(back.masks[0] == mask, "{case}: the mask read back differs");
        let info = io::describe_seg(&dest).unwrap();
        assert_eq!(
            info.frames, 5,
            "{case}: one frame per slice holding the mask"
        );
        assert_eq!((info.rows, info.cols), (64, 64));
        let src = vol.dicom_source().unwrap();
        assert_eq!(info.referenced_series, src.series_instance_uid, "{case}");
        let instances: std::collections::HashSet<_> =
            src.slices.iter().map(|s| &s.sop_instance_uid).collect();
        assert_eq!(info.referenced_instances, instances.len(), "{case}");
        let (number, seg) = &info.segments[0];
        assert_eq!((*number, seg.property_type.value.as_str()), (1, "55641003"));
        assert_eq!(seg.category, Code::morphologically_abnormal_structure());
        assert_eq!(seg.algorithm_name, "medseg LiteMedSAM");
        assert!(seg
            .algorithm_version
            .contains("weights-sha256:001122334455"));
    }
}

#[test]
fn the_seg_frames_sit_on_their_source_slices() {
    // Shuffled file names: each frame must name the instance at its own position.
    let dir = tempfile::tempdir().unwrap();
    let vol = io::read_volume(series("shuffled")).unwrap();
    let dest = dir.path().join("s.dcm");
    write(&dest, &blob(&vol), &vol, true);
    let obj = open_file(&dest).unwrap();
    let frames = obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(frames.len(), 12, "every slice, as asked");
    let src = vol.dicom_source().unwrap();
    for (z, groups) in frames.iter().enumerate() {
        let pos = nested(groups, &[tags::PLANE_POSITION_SEQUENCE])
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let want = src.slices[z].position.unwrap();
        assert!(pos.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4));
        assert!(
            (pos[2] - 4.0 * z as f64).abs() < 1e-4,
            "slice {z} at {pos:?}"
        );
        let uid = nested(
            groups,
            &[tags::DERIVATION_IMAGE_SEQUENCE, tags::SOURCE_IMAGE_SEQUENCE],
        )
        .element(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
        // The source file at that position, found by reading it alone.
        let file = std::fs::read_dir(series("shuffled"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let v = io::read_volume(p).unwrap();
                (v.affine[2][3] - 4.0 * z as f64).abs() < 1e-4
            })
            .unwrap();
        let own = open_file(&file).unwrap();
        assert_eq!(
            uid,
            own.element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
        );
    }
}

fn nested<'a>(obj: &'a InMemDicomObject, path: &[dicom_core::Tag]) -> &'a InMemDicomObject {
    path.iter()
        .fold(obj, |o, &t| &o.element(t).unwrap().items().unwrap()[0])
}

#[test]
fn a_multi_frame_source_is_referenced_by_frame_number() {
    let dir = tempfile::tempdir().unwrap();
    let vol = io::read_volume(series("enhanced")).unwrap();
    let src = vol.dicom_source().unwrap();
    assert_eq!(src.slices[4].frame, Some(5));
    let dest = dir.path().join("mf.dcm");
    write(&dest, &blob(&vol), &vol, false);
    let obj = open_file(&dest).unwrap();
    let first = &obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let source = nested(
        first,
        &[tags::DERIVATION_IMAGE_SEQUENCE, tags::SOURCE_IMAGE_SEQUENCE],
    );
    let frame = source
        .element(tags::REFERENCED_FRAME_NUMBER)
        .unwrap()
        .to_int::<u32>()
        .unwrap();
    assert_eq!(frame, 4, "slice 3 is the enhanced object's frame 4");
}

#[test]
fn two_segments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vol = io::read_volume(series("clean")).unwrap();
    let a = blob(&vol);
    let b: Vec<bool> = (0..a.len()).map(|i| i % 64 < 5 && i / 4096 == 9).collect();
    let (sa, sb) = (
        Segment::default(),
        Segment {
            label: "second".into(),
            ..Segment::default()
        },
    );
    let dest = dir.path().join("two.dcm");
    io::seg::write_seg(&dest, &[(&sa, &a), (&sb, &b)], &vol, false).unwrap();
    let back = io::read_seg(&dest, &vol).unwrap();
    assert_eq!(back.info.frames, 6);
    assert_eq!(back.info.segments[1].1.label, "second");
    assert!(back.masks[0] == a && back.masks[1] == b);
}

#[test]
fn a_seg_needs_dicom_source_slices() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.dcm");
    let nifti = io::read_volume(testdata("anatomical.nii")).unwrap();
    let info = MaskInfo::default();
    let e = write_mask::<&Path>(&dest, &vec![false; nifti.data.len()], &nifti, 0, &[], &info);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("the input is not DICOM"));
    let resampled = io::read_volume_with(
        series("gap"),
        &ReadOptions {
            uneven_slices: UnevenSlices::Resample,
        },
    )
    .unwrap();
    let e = io::mask::check_format(&dest, &resampled).unwrap_err();
    assert!(e.to_string().contains("resampled"), "{e}");
    assert!(!dest.exists());
}

/// The clean series' SEG, altered by `edit`, read back onto the clean series.
fn hostile(edit: impl FnOnce(&mut InMemDicomObject)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let vol = io::read_volume(series("clean")).unwrap();
    let dest = dir.path().join("h.dcm");
    write(&dest, &blob(&vol), &vol, false);
    let mut obj = open_file(&dest).unwrap();
    edit(&mut obj);
    obj.write_to_file(&dest).unwrap();
    match io::read_seg(&dest, &vol) {
        Err(medseg::Error::Dicom { reason, .. }) => reason,
        other => panic!("expected a DICOM error, got {other:?}"),
    }
}

fn set(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

#[test]
fn hostile_segs_are_refused_with_their_reason() {
    let r = hostile(|o| set(o, tags::NUMBER_OF_FRAMES, VR::IS, "9"));
    assert!(r.contains("9 frames declared, 5 per-frame"), "{r}");
    let r = hostile(|o| set(o, tags::NUMBER_OF_FRAMES, VR::IS, "0"));
    assert!(r.contains("0 frames of 64×64"), "{r}");
    let r = hostile(|o| {
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(8u16),
        ));
    });
    assert!(r.contains("1-bit frames"), "{r}");
    let r = hostile(|o| set(o, tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL"));
    assert!(r.contains("reads BINARY"), "{r}");
    let r = hostile(|o| set(o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.4"));
    assert!(r.contains("not a Segmentation object"), "{r}");
    let r = hostile(|o| {
        edit(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, 2, |g| {
            edit(g, tags::DERIVATION_IMAGE_SEQUENCE, 0, |d| {
                edit(d, tags::SOURCE_IMAGE_SEQUENCE, 0, |s| {
                    set(s, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.4")
                })
            })
        })
    });
    assert!(r.contains("frame 3 was derived from image 1.2.3.4"), "{r}");
    let r = hostile(|o| {
        edit(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, 0, |g| {
            edit(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE, 0, |i| {
                i.put(DataElement::new(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    VR::US,
                    PrimitiveValue::from(7u16),
                ));
            })
        })
    });
    assert!(
        r.contains("segment 7, which the SEG does not describe"),
        "{r}"
    );
    let r = hostile(|o| {
        edit(o, tags::REFERENCED_SERIES_SEQUENCE, 0, |s| {
            set(s, tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3")
        })
    });
    assert!(r.contains("references series 1.2.3"), "{r}");
    let r = hostile(|o| {
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(C::from_vec(vec![0; 10])),
        ));
    });
    assert!(r.contains("PixelData holds 10 bytes"), "{r}");
}

/// Change item `k` of sequence `seq` in place.
fn edit(
    o: &mut InMemDicomObject,
    seq: dicom_core::Tag,
    k: usize,
    f: impl FnOnce(&mut InMemDicomObject),
) {
    let mut el = o.take(seq).unwrap();
    f(&mut el.items_mut().unwrap()[k]);
    o.put(el);
}

#[test]
fn a_seg_read_onto_another_volume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vol = io::read_volume(series("clean")).unwrap();
    let dest = dir.path().join("c.dcm");
    write(&dest, &blob(&vol), &vol, false);
    let ct = io::read_volume(testdata("CT_small.dcm")).unwrap();
    let e = io::read_seg(&dest, &ct).unwrap_err().to_string();
    assert!(
        e.contains("frames of 64×64 for source slices of 128×128"),
        "{e}"
    );
    let nifti = io::read_volume(testdata("anatomical.nii")).unwrap();
    let e = io::read_seg(&dest, &nifti).unwrap_err().to_string();
    assert!(e.contains("not DICOM") || e.contains("64×64"), "{e}");
    assert!(io::seg_read::is_seg(&dest));
    assert!(!io::seg_read::is_seg(&testdata("CT_small.dcm")));
}
