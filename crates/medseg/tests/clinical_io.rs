//! DICOM and NIfTI reading on real files (pydicom's, nibabel's and nilearn's test data),
//! checked against what pydicom/nibabel gave the reference script; bad files get their error.

mod common;

use common::*;
use medseg::volume::{to_u8, Intensity, Modality};
use medseg::{io, Error};

#[test]
fn ct_dicom_is_in_hounsfield_units() {
    let vol = io::read_volume(testdata("CT_small.dcm")).unwrap();
    assert_eq!(vol.dims, [1, 128, 128]);
    assert_eq!(vol.modality, Modality::Ct);
    assert!((vol.spacing[1] - 0.661468).abs() < 1e-6 && (vol.spacing[2] - 0.661468).abs() < 1e-6);
    // The fixture is pydicom's pixel_array * slope + intercept, soft-tissue window, uint8.
    let ours = to_u8(&vol.data, Intensity::parse("soft").unwrap());
    assert_eq!(ours, read_png_grey("images/ct_small.png"));
}

#[test]
fn mr_dicom_compressed_variants_decode_identically() {
    let plain = io::read_volume(testdata("MR_small.dcm")).unwrap();
    assert_eq!(plain.modality, Modality::Mr);
    assert_eq!(
        to_u8(&plain.data, Intensity::Percentile),
        read_png_grey("images/mr_small.png")
    );
    for f in ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"] {
        let v = io::read_volume(testdata(f)).unwrap();
        assert_eq!(v.dims, plain.dims, "{f}");
        assert_eq!(v.data, plain.data, "{f}: lossless decode differs");
    }
}

#[test]
fn jpeg2000_head_ct_matches_pydicom() {
    let vol = io::read_volume(testdata("693_J2KI.dcm")).unwrap();
    assert_eq!(vol.dims, [1, 512, 512]);
    let ours = to_u8(&vol.data, Intensity::parse("brain").unwrap());
    let theirs = read_png_grey("images/head_ct.png");
    let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} pixels differ from pydicom + openjpeg");
}

#[test]
fn jpeg_baseline_and_rgb_rle_decode() {
    // 8-bit RGB JPEG baseline and RLE: both decode (to the mean of R, G, B), to the same image.
    let jpeg = io::read_volume(testdata("SC_rgb_jpeg_dcmtk.dcm")).unwrap();
    let rle = io::read_volume(testdata("SC_rgb_rle.dcm")).unwrap();
    assert_eq!(jpeg.dims, rle.dims);
    assert!(rle.data.iter().any(|&x| x != rle.data[0]));
    let mean_abs: f32 = jpeg
        .data
        .iter()
        .zip(&rle.data)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / rle.data.len() as f32;
    assert!(
        mean_abs < 3.0,
        "lossy JPEG far from the RLE original: mean |diff| {mean_abs}"
    );
    // 12-bit JPEG Extended has no pure-Rust decoder here: a clear error naming it.
    match io::read_volume(testdata("JPEG-lossy.dcm")) {
        Err(Error::UnsupportedTransferSyntax { uid, name, .. }) => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.51");
            assert!(name.contains("JPEG Extended"), "{name}");
        }
        other => panic!("expected UnsupportedTransferSyntax, got {other:?}"),
    }
}

#[test]
fn unsupported_and_broken_dicom_get_specific_errors() {
    match io::read_volume(testdata("JPEGLSNearLossless_08.dcm")) {
        Err(Error::UnsupportedTransferSyntax { uid, name, .. }) => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.81");
            assert!(name.contains("JPEG-LS"), "{name}");
        }
        other => panic!("expected UnsupportedTransferSyntax, got {other:?}"),
    }
    match io::read_volume(testdata("MR_truncated.dcm")) {
        Err(Error::Dicom { path, .. }) => assert!(path.ends_with("MR_truncated.dcm")),
        other => panic!("expected a DICOM error, got {other:?}"),
    }
}

#[test]
fn dicom_series_is_sorted_by_position() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    // Three copies of CT_small at z = 10, 0, 5 mm with scrambled instance numbers and a
    // different intercept each, so the order is visible in the HU values.
    for (i, (z, inter, inst)) in [(10.0, -900, 1), (0.0, -1100, 3), (5.0, -1000, 2)]
        .iter()
        .enumerate()
    {
        let mut obj = dicom_object::open_file(testdata("CT_small.dcm")).unwrap();
        let pos = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let v = format!("{}\\{}\\{}", pos[0], pos[1], z);
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(v),
        ));
        obj.put(DataElement::new(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            PrimitiveValue::from(inter.to_string()),
        ));
        obj.put(DataElement::new(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from(inst.to_string()),
        ));
        obj.write_to_file(dir.path().join(format!("s{i}.dcm")))
            .unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not dicom").unwrap();
    let vol = io::read_volume(dir.path()).unwrap();
    assert_eq!(vol.dims, [3, 128, 128]);
    assert!(
        (vol.spacing[0] - 5.0).abs() < 1e-9,
        "slice spacing {}",
        vol.spacing[0]
    );
    let single = io::read_volume(testdata("CT_small.dcm")).unwrap();
    let n = 128 * 128;
    for (k, inter) in [-1100.0f32, -1000.0, -900.0].iter().enumerate() {
        let shift = inter - (-1024.0);
        assert!(
            vol.data[k * n..(k + 1) * n]
                .iter()
                .zip(&single.data)
                .all(|(a, b)| (a - b - shift).abs() < 1e-3),
            "slice {k} is not the one at z = {}",
            k * 5
        );
    }
}

#[test]
fn mni_template_reads_like_nibabel() {
    let vol =
        io::read_volume(testdata("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    assert_eq!(vol.dims, [189, 233, 197]);
    assert_eq!(vol.spacing, [1.0, 1.0, 1.0]);
    // Fixture: mr_norm(np.rot90(vol[:, :, 80])) — rows are y reversed, columns x.
    let n = 233 * 197;
    let ours = to_u8(&vol.data[80 * n..81 * n], Intensity::Percentile);
    let flipped: Vec<u8> = (0..233)
        .rev()
        .flat_map(|y| ours[y * 197..(y + 1) * 197].to_vec())
        .collect();
    assert_eq!(flipped, read_png_grey("images/mni_t1.png"));
}

#[test]
fn nifti_mask_keeps_the_input_geometry() {
    let vol = io::read_volume(testdata("anatomical.nii")).unwrap();
    let mut mask = vec![false; vol.data.len()];
    for i in (0..mask.len()).step_by(7) {
        mask[i] = true;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.nii.gz");
    io::nifti::write_mask(&out, &mask, &vol).unwrap();
    let back = io::read_volume(&out).unwrap();
    assert_eq!(back.dims, vol.dims);
    assert_eq!(back.affine, vol.affine);
    assert_eq!(back.spacing, vol.spacing);
    let got: Vec<bool> = back.data.iter().map(|&v| v > 0.5).collect();
    assert_eq!(got, mask);
    // From DICOM: the affine is the patient geometry (LPS → RAS).
    let ct = io::read_volume(testdata("CT_small.dcm")).unwrap();
    let out = dir.path().join("ct.nii");
    io::nifti::write_mask(&out, &vec![true; ct.data.len()], &ct).unwrap();
    let back = io::read_volume(&out).unwrap();
    for r in 0..3 {
        for c in 0..4 {
            assert!((back.affine[r][c] - ct.affine[r][c]).abs() < 1e-4);
        }
    }
    assert!(
        ct.affine[0][3] != 0.0,
        "DICOM position carried into the affine"
    );
}

#[test]
fn nifti2_and_4d_are_refused_clearly() {
    match io::read_volume(testdata("example_nifti2.nii.gz")) {
        Err(Error::Nifti { reason, .. }) => assert!(reason.contains("NIfTI-2"), "{reason}"),
        other => panic!("expected a NIfTI-2 error, got {other:?}"),
    }
    match io::read_volume(testdata("example4d.nii.gz")) {
        Err(Error::Nifti { reason, .. }) => assert!(reason.contains("4-D"), "{reason}"),
        other => panic!("expected a 4D error, got {other:?}"),
    }
    assert!(matches!(
        io::read_volume("/nonexistent/x.nii.gz"),
        Err(Error::Io { .. })
    ));
}

#[test]
fn windows_by_name_and_value() {
    assert_eq!(
        Intensity::parse("stroke").unwrap(),
        Intensity::Window {
            level: 40.0,
            width: 40.0
        }
    );
    assert_eq!(
        Intensity::parse("40,80").unwrap(),
        Intensity::parse("brain").unwrap()
    );
    assert_eq!(
        Intensity::parse("lung").unwrap(),
        Intensity::Window {
            level: -600.0,
            width: 1500.0
        }
    );
    assert!(Intensity::parse("40,-3").is_err());
    assert!(Intensity::parse("nonsense").is_err());
    let v = to_u8(
        &[-100.0, 0.0, 40.0, 80.0, 500.0],
        Intensity::parse("brain").unwrap(),
    );
    assert_eq!(v, vec![0, 0, 127, 255, 255]);
}
