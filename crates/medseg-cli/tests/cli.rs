//! The `medseg segment` contract of issue #2, through the built binary.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{fixtures, golden};

/// The CLI. `segment` without `--weights` reads the weights cache and never downloads, so the
/// default weights are fetched once here (as `medseg fetch-weights` does), loudly on failure.
fn medseg() -> Command {
    static FETCHED: std::sync::Once = std::sync::Once::new();
    FETCHED.call_once(|| {
        medseg::weights::fetch_default()
            .unwrap_or_else(|e| panic!("the CLI tests need the LiteMedSAM weights: {e}"));
    });
    Command::new(env!("CARGO_BIN_EXE_medseg"))
}

fn read_mask(path: &std::path::Path) -> (Vec<bool>, u32, u32) {
    let img = image::open(path).expect("mask png").to_luma8();
    assert!(
        img.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255),
        "mask is 0/255"
    );
    let (w, h) = img.dimensions();
    (img.into_raw().into_iter().map(|v| v == 255).collect(), w, h)
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let i = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let u = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if u == 0 {
        1.0
    } else {
        i as f64 / u as f64
    }
}

#[test]
fn segment_lite_medsam_with_default_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.png");
    let logits = dir.path().join("logits.npy");
    for (case, bbox) in [("demo_ct", "95,255,190,350"), ("mni_t1", "40,60,160,180")] {
        let run = medseg()
            .args(["segment", "--model", "lite-medsam", "--input"])
            .arg(fixtures().join(format!("images/{case}.png")))
            .args(["--box", bbox, "--output"])
            .arg(&out)
            .arg("--logits")
            .arg(&logits)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let (mask, w, h) = read_mask(&out);
        let mut g = golden(&format!("lite_{case}.npz"));
        let reference: ndarray::ArrayD<u8> = g.by_name("mask").unwrap();
        assert_eq!(
            reference.shape(),
            &[h as usize, w as usize],
            "mask has the input's size"
        );
        let reference: Vec<bool> = reference.iter().map(|&v| v > 0).collect();
        let m_iou = iou(&mask, &reference);
        assert!(m_iou >= 0.99, "{case}: mask IoU vs official {m_iou}");
        let ours: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&logits).unwrap();
        assert_eq!(ours.shape(), &[256, 256]);
        let theirs: ndarray::ArrayD<f32> = g.by_name("low_res_logits").unwrap();
        let d = ours
            .iter()
            .zip(theirs.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 5e-3, "{case}: logits max |Δ| {d}");
    }
}

/// `--precision bf16` with the speed check off (`MEDSEG_BF16_CHECK=off`, so that the kernel runs
/// on every CPU that has one): the mask within 2 % IoU of the official one, and either the bf16
/// kernel ran (logits differ from f32's) or, on a CPU without AVX-512 BF16, the note says f32
/// ran and the logits are f32's. A wrong value is one clear line.
#[test]
fn segment_with_precision_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let demo = fixtures().join("images/demo_ct.png");
    let demo = demo.to_str().unwrap();
    let run = |precision: &str| {
        let out = dir.path().join(format!("{precision}.png"));
        let logits = dir.path().join(format!("{precision}.npy"));
        let (_, err) = succeeds_with_env(
            &[("MEDSEG_BF16_CHECK", "off")],
            &[
                "segment",
                "--model",
                "lite-medsam",
                "--input",
                demo,
                "--box",
                "95,255,190,350",
                "--precision",
                precision,
                "--output",
                out.to_str().unwrap(),
                "--logits",
                logits.to_str().unwrap(),
            ],
        );
        let l: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&logits).unwrap();
        (read_mask(&out).0, l, err)
    };
    let (m32, l32, _) = run("f32");
    let (m16, l16, err) = run("bf16");
    let reference: ndarray::ArrayD<u8> = golden("lite_demo_ct.npz").by_name("mask").unwrap();
    let reference: Vec<bool> = reference.iter().map(|&v| v > 0).collect();
    let m_iou = iou(&m16, &reference);
    assert!(m_iou >= 0.98, "bf16 mask IoU vs official {m_iou}");
    assert!(iou(&m32, &reference) >= 0.99);
    // The binary's own run-time detection (AVX-512 F + BF16), not a reading of /proc/cpuinfo.
    if medseg::model::bf16::supported() {
        assert_ne!(l16, l32, "bf16 gave f32's logits exactly");
        assert!(!err.contains("not bf16"), "{err}");
    } else {
        assert_eq!(l16, l32, "the f32 fallback is not f32");
        assert!(
            err.contains("running in f32, not bf16"),
            "no fallback note: {err}"
        );
    }
    let out = dir.path().join("x.png");
    let mut args = segment_lite(demo, "95,255,190,350", out.to_str().unwrap()).to_vec();
    args.extend(["--precision", "fp16"]);
    fails_with(&args, "--precision \"fp16\": use f32 or bf16");
}

/// `medseg info --cpu`: the features, the bf16 kernel, and what `--precision bf16` runs with
/// the reason, agreeing with the library's detection; with the check off, bf16 runs wherever
/// a kernel exists. `info` without a file or `--cpu` is refused.
#[test]
fn info_cpu_says_what_bf16_runs_and_why() {
    let (out, _) = succeeds(&["info", "--cpu"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("cpu: ") && lines[0].contains("avx512_bf16 "),
        "{out}"
    );
    let kernel = medseg::model::bf16::kernel();
    assert!(
        lines[1].starts_with(&format!(
            "bf16 kernel: {}",
            kernel.map_or("none", |k| k.name())
        )),
        "{out}"
    );
    let runs = lines[2].strip_prefix("--precision bf16 runs ").expect(&out);
    match kernel {
        None => assert!(
            runs.starts_with("f32: this CPU has no AVX-512 BF16"),
            "{out}"
        ),
        Some(k) => assert!(
            runs.starts_with(&format!("bf16: bf16 on {}: ", k.name()))
                || (runs.starts_with("f32: ") && runs.contains("not faster than f32")),
            "{out}"
        ),
    }
    let (off, _) = succeeds_with_env(&[("MEDSEG_BF16_CHECK", "off")], &["info", "--cpu"]);
    let want = if kernel.is_some() {
        "runs bf16"
    } else {
        "runs f32"
    };
    assert!(off.contains(want), "{off}");
    let bare = medseg().arg("info").output().unwrap();
    let err = String::from_utf8_lossy(&bare.stderr);
    assert!(!bare.status.success() && err.contains("<FILE>"), "{err}");
}

fn fails_with(args: &[&str], needle: &str) {
    fails_with_env(&[], args, needle);
}

/// Run with extra environment variables: a failure, one line on stderr holding `needle`, no
/// panic text. Returns stderr.
fn fails_with_env(env: &[(&str, &str)], args: &[&str], needle: &str) -> String {
    let run = medseg()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(!run.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    err
}

/// `segment --model lite-medsam --input INPUT --box BOX --output OUT`.
fn segment_lite<'a>(input: &'a str, bbox: &'a str, out: &'a str) -> [&'a str; 9] {
    [
        "segment",
        "--model",
        "lite-medsam",
        "--input",
        input,
        "--box",
        bbox,
        "--output",
        out,
    ]
}

#[test]
fn bad_input_is_one_clear_line() {
    let demo = fixtures().join("images/demo_ct.png");
    let demo = demo.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.png");
    let out = out.to_str().unwrap();
    // An empty weights cache: `segment` says how to fill it and downloads nothing.
    let empty = dir.path().join("empty-cache");
    fails_with_env(
        &[("MEDSEG_CACHE_DIR", empty.to_str().unwrap())],
        &segment_lite(demo, "95,255,190,350", out),
        "not in the cache",
    );
    assert!(!empty.join("lite_medsam.pth").exists());
    fails_with(
        &segment_lite(demo, "600,255,900,350", out),
        "wholly outside the image",
    );
    fails_with(&segment_lite(demo, "190,255,95,350", out), "x0 < x1");
    fails_with(&segment_lite(demo, "1,2,3", out), "four numbers");
    fails_with(&segment_lite(demo, "a,b,c,d", out), "four numbers");
    fails_with(
        &segment_lite("/nonexistent/image.png", "1,1,5,5", out),
        "cannot read",
    );
    let not_png = dir.path().join("x.png");
    std::fs::write(&not_png, b"not an image").unwrap();
    fails_with(
        &segment_lite(not_png.to_str().unwrap(), "1,1,5,5", out),
        "image",
    );
    fails_with(
        &[
            "segment",
            "--model",
            "medsam",
            "--input",
            demo,
            "--box",
            "95,255,190,350",
            "--output",
            out,
        ],
        "medsam_vit_b.pth",
    );
    // LiteMedSAM weights handed to MedSAM: refused, naming the mismatch.
    let lite = medseg::weights::fetch_default().expect("weights");
    fails_with(
        &[
            "segment",
            "--model",
            "medsam",
            "--weights",
            lite.to_str().unwrap(),
            "--input",
            demo,
            "--box",
            "95,255,190,350",
            "--output",
            out,
        ],
        "lite-medsam checkpoint",
    );
    // The input is never overwritten.
    fails_with(
        &segment_lite(demo, "95,255,190,350", demo),
        "refusing to overwrite",
    );
    assert!(
        !std::path::Path::new(out).exists(),
        "no partial output left behind"
    );
}

#[test]
fn info_describes_checkpoints_and_images() {
    let lite = medseg::weights::fetch_default().expect("weights");
    let run = medseg().arg("info").arg(&lite).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && text.contains("435 tensors") && text.contains("lite-medsam"),
        "{text}"
    );
    let run = medseg()
        .arg("info")
        .arg(fixtures().join("images/mr_small.png"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("64x64"), "{text}");
}

fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("MEDSEG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: run `bash tests/data/fetch.sh`",
        p.display()
    );
    p
}

#[test]
fn segment_dicom_and_nifti_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let nii = dir.path().join("mask.nii.gz");
    let overlay = dir.path().join("overlay.png");
    let run = medseg()
        .args([
            "segment",
            "--model",
            "lite-medsam",
            "--window",
            "soft",
            "--input",
        ])
        .arg(testdata("CT_small.dcm"))
        .args(["--box", "30,40,90,100", "--output"])
        .arg(&nii)
        .arg("--overlay")
        .arg(&overlay)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("lesion volume:") && out.contains(" mL"),
        "{out}"
    );
    let back = medseg::io::read_volume(&nii).unwrap();
    assert_eq!(back.dims, [1, 128, 128]);
    assert!(back.data.iter().any(|&v| v > 0.5), "mask is empty");
    // One tile (the key slice, framed and labelled in yellow) and a legend line below it.
    let ov = image::open(&overlay).unwrap().to_rgb8();
    let (w, h) = ov.dimensions();
    assert!(w >= 128 && h == 128 + 12, "{w}x{h}");
    assert!(ov.pixels().any(|p| p.0 == [0, 255, 0]), "box drawn");
    assert!(
        (0..128).all(|y| ov.get_pixel(0, y).0 == [255, 255, 0]),
        "key tile framed"
    );
    assert!(
        (0..w).any(|x| ov.get_pixel(x, 128 + 5).0 == [255, 255, 255]),
        "legend drawn"
    );

    // The same CT slice through the 2D path from the windowed PNG gives the same mask.
    let png = dir.path().join("mask.png");
    let run = medseg()
        .args(["segment", "--model", "lite-medsam", "--input"])
        .arg(fixtures().join("images/ct_small.png"))
        .args(["--box", "30,40,90,100", "--output"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(run.status.success());
    let (mask2d, _, _) = read_mask(&png);
    let mask3d: Vec<bool> = back.data.iter().map(|&v| v > 0.5).collect();
    assert_eq!(mask2d, mask3d, "DICOM path and PNG path disagree");

    let npy = dir.path().join("mask.npy");
    let run = medseg()
        .args(["segment", "--model", "lite-medsam", "--input"])
        .arg(testdata("MR_small_RLE.dcm"))
        .args(["--box", "14,10,50,54", "--output"])
        .arg(&npy)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let arr: ndarray::ArrayD<u8> = ndarray_npy::read_npy(&npy).unwrap();
    assert_eq!(arr.shape(), &[1, 64, 64]);

    fails_with(
        &[
            "segment",
            "--model",
            "lite-medsam",
            "--input",
            testdata("example_nifti2.nii.gz").to_str().unwrap(),
            "--box",
            "1,1,5,5",
            "--output",
            nii.to_str().unwrap(),
        ],
        "NIfTI-2",
    );
    fails_with(
        &[
            "segment",
            "--model",
            "lite-medsam",
            "--input",
            testdata("MR_truncated.dcm").to_str().unwrap(),
            "--box",
            "1,1,5,5",
            "--output",
            nii.to_str().unwrap(),
        ],
        "DICOM",
    );
    fails_with(
        &[
            "segment",
            "--model",
            "lite-medsam",
            "--input",
            testdata("CT_small.dcm").to_str().unwrap(),
            "--slice",
            "3",
            "--box",
            "1,1,5,5",
            "--output",
            nii.to_str().unwrap(),
        ],
        "--slice 3",
    );
}

#[test]
fn sixteen_bit_png_goes_through_the_intensity_path() {
    // CT_small as a 16-bit PNG holding HU + 1024: with the soft-tissue window shifted by
    // 1024 it must give exactly the mask of the 8-bit windowed PNG.
    let ct = medseg::io::read_volume(testdata("CT_small.dcm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let png16 = dir.path().join("ct16.png");
    let raw: Vec<u16> = ct.data.iter().map(|&v| (v + 1024.0) as u16).collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(128, 128, raw)
        .unwrap()
        .save(&png16)
        .unwrap();
    let back = medseg::io::read_volume(&png16).unwrap();
    assert!(back
        .data
        .iter()
        .zip(&ct.data)
        .all(|(a, b)| (a - (b + 1024.0)).abs() < 1e-3));
    let (m16, m8) = (dir.path().join("m16.png"), dir.path().join("m8.png"));
    let run16 = medseg()
        .args([
            "segment",
            "--model",
            "lite-medsam",
            "--window",
            "1064,400",
            "--input",
        ])
        .arg(&png16)
        .args(["--box", "30,40,90,100", "--output"])
        .arg(&m16)
        .output()
        .unwrap();
    assert!(
        run16.status.success(),
        "{}",
        String::from_utf8_lossy(&run16.stderr)
    );
    let run8 = medseg()
        .args(["segment", "--model", "lite-medsam", "--input"])
        .arg(fixtures().join("images/ct_small.png"))
        .args(["--box", "30,40,90,100", "--output"])
        .arg(&m8)
        .output()
        .unwrap();
    assert!(run8.status.success());
    assert_eq!(read_mask(&m16).0, read_mask(&m8).0);
    // Without a window a 16-bit image is min-max scaled, never truncated to 8 bits.
    let run = medseg()
        .args(["segment", "--model", "lite-medsam", "--input"])
        .arg(&png16)
        .args(["--box", "30,40,90,100", "--output"])
        .arg(&m16)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn every_bad_input_in_the_corpus_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.nii.gz");
    let out = out.to_str().unwrap();
    let demo = fixtures().join("images/demo_ct.png");
    let demo = demo.to_str().unwrap();
    // hostile checkpoints as --weights
    for entry in std::fs::read_dir(fixtures().join("hostile")).unwrap() {
        let p = entry.unwrap().path();
        let w = p.to_str().unwrap();
        fails_with(
            &[
                "segment",
                "--model",
                "lite-medsam",
                "--weights",
                w,
                "--input",
                demo,
                "--box",
                "95,255,190,350",
                "--output",
                out,
            ],
            "checkpoint",
        );
    }
    // broken or unsupported medical files
    for (f, needle) in [
        ("MR_truncated.dcm", "DICOM"),
        ("JPEGLSNearLossless_08.dcm", "unsupported transfer syntax"),
        ("JPEG-lossy.dcm", "unsupported transfer syntax"),
        ("example_nifti2.nii.gz", "NIfTI-2"),
        ("example4d.nii.gz", "4-D"),
    ] {
        fails_with(
            &segment_lite(testdata(f).to_str().unwrap(), "1,1,5,5", out),
            needle,
        );
    }
    // the fuzz targets' findings (fuzz/regressions/): each a failure with one line
    let regressions = fixtures().join("../../fuzz/regressions");
    for dir in ["dicom", "nifti"] {
        for entry in std::fs::read_dir(regressions.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            // Each error names the file it is about.
            let name = p.file_name().unwrap().to_str().unwrap();
            fails_with(&segment_lite(p.to_str().unwrap(), "1,1,5,5", out), name);
        }
    }
    let big = regressions.join("png/217x62736-grey-past-the-voxel-limit.png");
    fails_with_env(
        &[("MEDSEG_MAX_VOXELS", "4194304")],
        &["info", big.to_str().unwrap()],
        "exceeds the limit",
    );
    // sizes over the configured limit are refused before allocation
    for f in [
        testdata("CT_small.dcm"),
        testdata("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
        fixtures().join("images/demo_ct.png"),
    ] {
        fails_with_env(
            &[("MEDSEG_MAX_VOXELS", "1000")],
            &segment_lite(f.to_str().unwrap(), "1,1,5,5", out),
            "exceeds the limit of 1000 voxels (MEDSEG_MAX_VOXELS)",
        );
    }
    assert!(!std::path::Path::new(out).exists());
}

/// Run to success; (stdout, stderr).
fn succeeds(args: &[&str]) -> (String, String) {
    succeeds_with_env(&[], args)
}

/// [`succeeds`] with extra environment variables.
fn succeeds_with_env(env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let run = medseg()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    );
    assert!(run.status.success(), "{args:?}: {err}");
    (out, err)
}

#[test]
fn series_geometry_is_checked_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.nii.gz");
    let gap = testdata("series/gap");
    let args = segment_lite(gap.to_str().unwrap(), "14,10,50,54", out.to_str().unwrap());
    fails_with(&args, "step of 8.000 mm between s04.dcm and s06.dcm");
    assert!(!out.exists());
    // Opted in: resampled onto 12 slices, the clean series' geometry, and a note on stderr.
    let mut resample = args.to_vec();
    resample.extend(["--uneven-slices", "resample"]);
    let (_, err) = succeeds(&resample);
    assert!(
        err.contains("medseg: note: uneven slice positions"),
        "{err}"
    );
    let mask = medseg::io::read_volume(&out).unwrap();
    let clean = medseg::io::read_volume(testdata("series/clean")).unwrap();
    assert_eq!(mask.dims, clean.dims);
    for r in 0..3 {
        for c in 0..4 {
            assert!((mask.affine[r][c] - clean.affine[r][c]).abs() < 1e-4);
        }
    }
    // `info` describes what it finds, also for a series that segment refuses by default.
    let tilt = testdata("series/tilt");
    let (text, _) = succeeds(&["info", tilt.to_str().unwrap()]);
    assert!(text.contains("gantry tilt 4.29°"), "{text}");
    assert!(text.contains("from the DICOM positions"), "{text}");
    let (text, _) = succeeds(&["info", testdata("anatomical.nii").to_str().unwrap()]);
    assert!(
        text.contains("from the NIfTI sform"),
        "which geometry: {text}"
    );
    let (text, _) = succeeds(&["info", gap.to_str().unwrap()]);
    assert!(text.contains("refused by default: DICOM"), "{text}");
    fails_with(
        &["info", testdata("series/noipp").to_str().unwrap()],
        "ImagePositionPatient is missing in 1 of 12 images (s03.dcm)",
    );
}

#[test]
fn outputs_are_checked_first_and_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let demo = fixtures().join("images/demo_ct.png");
    let demo = demo.to_str().unwrap();
    let existing = dir.path().join("mask.png");
    std::fs::write(&existing, b"an earlier result").unwrap();
    let o = existing.to_str().unwrap();
    let with = |extra: &[&str]| {
        let mut a = segment_lite(demo, "95,255,190,350", o).to_vec();
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let missing_dir = dir.path().join("missing/overlay.png");
    let npy = dir.path().join("o.npy");
    for (extra, needle) in [
        (vec!["--overlay", o], "the same file as another output"),
        (
            vec!["--overlay", missing_dir.to_str().unwrap()],
            "output directory",
        ),
        (
            vec![
                "--logits",
                npy.to_str().unwrap(),
                "--overlay",
                npy.to_str().unwrap(),
            ],
            "--overlay",
        ),
        (vec!["--logits", "logits.png"], "--logits"),
    ] {
        let args = with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, needle);
        assert_eq!(std::fs::read(&existing).unwrap(), b"an earlier result");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing else written: {left:?}");
}

#[test]
fn windows_drift_and_modality_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.nii");
    let ct = testdata("CT_small.dcm");
    let base = segment_lite(ct.to_str().unwrap(), "30,40,90,100", out.to_str().unwrap());
    let with = |extra: &[&str]| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let fails_with = |args: &[String], needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, needle)
    };
    for w in ["40,1e-30", "40,0", "NaN,40", "40,-5"] {
        fails_with(
            &with(&["--window", w]),
            &format!("--window {w:?}: use brain"),
        );
    }
    // Accepted by the parser, but the key slice comes out one flat grey level.
    fails_with(&with(&["--window", "40,1e30"]), "maps the whole key slice");
    fails_with(&with(&["--window", "5000,10"]), "maps the whole key slice");
    for d in ["--max-drift=NaN", "--max-drift=-1"] {
        fails_with(&with(&[d]), "--max-drift");
    }
    fails_with(&with(&["--modality", "xyz"]), "--modality");
    fails_with(&with(&["--uneven-slices", "maybe"]), "--uneven-slices");
    assert!(!out.exists());
}

#[test]
fn an_image_has_no_voxel_size_and_no_millilitres() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.png");
    let png = fixtures().join("images/ct_small.png");
    let mut args =
        segment_lite(png.to_str().unwrap(), "30,40,90,100", out.to_str().unwrap()).to_vec();
    args.extend(["--window", "minmax"]);
    let (text, _) = succeeds(&args);
    assert!(text.contains("lesion volume: unknown"), "{text}");
    assert!(
        !text.contains(" mL ("),
        "no millilitres from an assumed 1 mm: {text}"
    );
}

#[test]
fn batch_records_each_case_and_skips_finished_ones_on_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cases.csv");
    std::fs::write(
        &csv,
        format!(
            "case_id,input,key_slice,x0,y0,x1,y1,model,window\n\
             ct,{},,30,40,90,100,,soft\n\
             broken,{},,1,1,5,5,,\n",
            testdata("CT_small.dcm").display(),
            testdata("MR_truncated.dcm").display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let batch = || {
        medseg()
            .arg("batch")
            .arg(&csv)
            .arg("--output-dir")
            .arg(&out)
            .output()
            .unwrap()
    };
    let run = batch();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(!run.status.success(), "a failed case fails the batch");
    assert!(
        stdout.contains("2 cases: 1 ok (0 done before), 1 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("case broken failed: DICOM"), "{stderr}");
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = results.lines().collect();
    assert!(rows[0].starts_with("case_id,status,volume_ml,voxels"));
    assert!(rows[1].starts_with("ct,ok,") && rows[2].starts_with("broken,failed,"));
    let mask = medseg::io::read_volume(out.join("ct.nii.gz")).unwrap();
    assert!(mask.data.iter().any(|&v| v > 0.5));
    assert!(!out.join("broken.nii.gz").exists());
    // The re-run skips the finished case and keeps its row; the failure is tried again.
    let again = batch();
    assert!(String::from_utf8_lossy(&again.stdout).contains("1 ok (1 done before)"));
    let results2 = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(results2.lines().nth(1), rows.get(1).copied());
    // A malformed cases file is one clear line.
    std::fs::write(&csv, "case_id,input,slice\n").unwrap();
    fails_with(
        &[
            "batch",
            csv.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
        ],
        "unknown column \"slice\"",
    );
}

/// The parity tests' seeded MedSAM2 weights as a user's checkpoint in `dir`, and the 14
/// template slices of `medsam2_volume.npz` as NIfTI there (values `v + 0.5`, so the window
/// 127.5,255 gives back the bytes).
fn medsam2_case(dir: &Path) -> (PathBuf, PathBuf, medseg::Volume) {
    let layout = std::fs::read_to_string(fixtures().join("golden/medsam2_layout.txt")).unwrap();
    let mut sd =
        medseg::testing::seeded_random_state_dict(&medseg::testing::parse_layout(&layout), 2024);
    let bias = sd
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
        .unwrap();
    bias.data.iter_mut().for_each(|v| *v += 6.0); // the reference's OBJ_BIAS
    let weights = dir.join("medsam2_random.safetensors");
    sd.save_safetensors(&weights).unwrap();
    let (input, vol) = common::template(dir);
    (weights, input, vol)
}

/// `--prompts`: a session script with two objects (boxes, a negative click, partial
/// propagations) gives a label map equal to the library session's on the same script, one
/// summary line and one JSON object per object; a bad entry is named.
#[test]
fn segment_a_volume_with_a_session_script() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, input, _) = medsam2_case(dir.path());
    let script = r#"[
        {"slice": 4, "object": 1, "box": [60, 80, 140, 150]},
        {"slice": 7, "object": 2, "box": [20, 30, 90, 100]},
        {"slice": 7, "object": 2, "points": [[60, 40]], "labels": [0]},
        {"propagate": "forward", "start": 4, "max": 4},
        {"propagate": "backward", "start": 4, "max": 1}
    ]"#;
    let prompts = dir.path().join("prompts.json");
    std::fs::write(&prompts, script).unwrap();
    let (labels, json) = (dir.path().join("labels.nii.gz"), dir.path().join("s.json"));
    let args = |out: &Path, p: &Path| {
        vec![
            "segment".to_string(),
            "--model".into(),
            "medsam2".into(),
            "--weights".into(),
            weights.to_str().unwrap().into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--prompts".into(),
            p.to_str().unwrap().into(),
            "--window".into(),
            "127.5,255".into(),
            "--modality".into(),
            "mr".into(),
            "--output".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let mut a = args(&labels, &prompts);
    a.extend(["--json".to_string(), json.to_str().unwrap().to_string()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (out, _) = succeeds(&a);
    assert!(
        out.contains("2 objects") && out.contains("object 1: ") && out.contains("object 2: "),
        "{out}"
    );
    let ours: Vec<u8> = medseg::io::read_volume(&labels)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u8)
        .collect();

    let vol = medseg::io::read_volume(&input).unwrap();
    let sd = medseg::weights::StateDict::load(&weights).unwrap();
    let seg = medseg::Segmenter::from_state_dict(medseg::ModelFamily::MedSam2, &sd, &medseg::cpu())
        .unwrap();
    let opts = medseg::SessionOptions {
        intensity: Some(medseg::Intensity::Window {
            level: 127.5,
            width: 255.0,
        }),
        ..Default::default()
    };
    let mut s = medseg::VolumeSession::new(&seg, &vol, &opts).unwrap();
    for step in medseg::propagate::parse_steps(script).unwrap() {
        s.apply(&step, &mut |_| unreachable!(), &mut |_| {})
            .unwrap();
    }
    let theirs: Vec<u8> = s.label_map().into_iter().map(|v| v as u8).collect();
    assert_eq!(ours, theirs, "the CLI's label map is the session's");
    assert!(
        ours.contains(&1) && ours.contains(&2),
        "both objects in the label map"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let objects = j["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    let voxels = ours.iter().filter(|&&v| v == 2).count() as u64;
    assert_eq!(objects[1]["object"], 2);
    assert_eq!(objects[1]["voxels"].as_u64(), Some(voxels));

    std::fs::write(
        &prompts,
        r#"[{"slice": 4, "box": [60, 80, 140, 150]}, {"slice": 99, "box": [1, 1, 5, 5]}]"#,
    )
    .unwrap();
    let bad = args(&dir.path().join("x.nii.gz"), &prompts);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    fails_with(&bad, "entry 1");
}

/// MedSAM2 with the parity test's seeded weights (written to a file as a user's checkpoint)
/// on the 14 template slices of `medsam2_volume.npz`, as NIfTI: the mask is the reference
/// passes' union (largest component), the key logits are 128×128, the overlay is drawn.
#[test]
fn segment_a_volume_with_medsam2() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, input, vol) = medsam2_case(dir.path());
    let dims = vol.dims;
    let mut g = golden("medsam2_volume.npz");

    let (mask, logits, overlay) = (
        dir.path().join("mask.nii.gz"),
        dir.path().join("pass_logits.npy"),
        dir.path().join("overlay.png"),
    );
    let (out, _) = succeeds(&[
        "segment",
        "--model",
        "medsam2",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--slice",
        "4",
        "--box",
        "60,80,140,150",
        "--window",
        "127.5,255",
        "--output",
        mask.to_str().unwrap(),
        "--logits",
        logits.to_str().unwrap(),
        "--overlay",
        overlay.to_str().unwrap(),
    ]);
    assert!(
        out.contains("lesion volume:") && out.contains(" mL"),
        "{out}"
    );
    let ours: Vec<bool> = medseg::io::read_volume(&mask)
        .unwrap()
        .data
        .iter()
        .map(|&v| v > 0.5)
        .collect();

    let low: ndarray::ArrayD<f32> = g.by_name("low_res").unwrap();
    let low: Vec<f32> = low.iter().copied().collect();
    let [z, h, w] = dims;
    let mut theirs = vec![false; z * h * w];
    for (i, plane) in low.chunks(128 * 128).enumerate() {
        if plane[0].is_nan() {
            continue;
        }
        let s = i % z;
        let up = medseg::preprocess::bilinear_resize(plane, 128, 128, h, w);
        for (m, v) in theirs[s * h * w..(s + 1) * h * w].iter_mut().zip(up) {
            *m |= v > 0.0;
        }
    }
    medseg::volume::largest_component_with(&mut theirs, dims, medseg::volume::Connectivity::Full);
    let agree = iou(&ours, &theirs);
    assert!(agree >= 0.99, "IoU {agree} with the reference's passes");
    // --logits: (2, Z, H, W), each pass's logits at the input size, NaN where it did not go.
    let passes: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&logits).unwrap();
    assert_eq!(passes.shape(), [2, z, h, w]);
    let passes: Vec<f32> = passes.iter().copied().collect();
    for (i, (ours, low)) in passes.chunks(h * w).zip(low.chunks(128 * 128)).enumerate() {
        assert_eq!(
            ours[0].is_nan(),
            low[0].is_nan(),
            "pass {} slice {}",
            i / z,
            i % z
        );
        if !low[0].is_nan() {
            let up = medseg::preprocess::bilinear_resize(low, 128, 128, h, w);
            let d = ours
                .iter()
                .zip(&up)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d <= 5e-3, "pass {} slice {}: max |Δ| {d}", i / z, i % z);
        }
    }
    assert!(image::open(&overlay).is_ok(), "overlay written");

    // A DICOM series folder goes the same way (pydicom's MR_small as 12 slices).
    let series_mask = dir.path().join("series.nii.gz");
    let (out, _) = succeeds(&[
        "segment",
        "--model",
        "medsam2",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        testdata("series/clean").to_str().unwrap(),
        "--slice",
        "6",
        "--box",
        "16,16,48,48",
        "--output",
        series_mask.to_str().unwrap(),
    ]);
    assert!(out.contains("lesion volume:"), "{out}");
    let back = medseg::io::read_volume(&series_mask).unwrap();
    assert_eq!(back.dims, [12, 64, 64]);
    assert!(
        back.data.iter().any(|&v| v > 0.5),
        "the seeded model finds an object"
    );

    // Without --weights: what is missing and where it comes from.
    let run = medseg()
        .args([
            "segment",
            "--model",
            "medsam2",
            "--input",
            input.to_str().unwrap(),
        ])
        .args(["--box", "60,80,140,150", "--output"])
        .arg(dir.path().join("m2.nii.gz"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("MedSAM2_latest.pt"),
        "{err}"
    );
}

/// `medseg batch CSV --output-dir OUT` run in `cwd`.
fn batch_in(
    cwd: &std::path::Path,
    csv: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Output {
    medseg()
        .current_dir(cwd)
        .arg("batch")
        .arg(csv)
        .arg("--output-dir")
        .arg(out)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn rows(out: &std::path::Path) -> Vec<Vec<String>> {
    let body = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header[..3], ["case_id", "status", "volume_ml"]);
    r.records()
        .map(|x| x.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Issue #26 points 1 and 2: every output is planned against every input of the whole CSV and
/// against the cases file before any case runs.
#[test]
fn batch_never_writes_over_an_input_or_the_cases_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(testdata("CT_small.dcm"), d.join("mca.dcm")).unwrap();
    let vol = medseg::io::read_volume(d.join("mca.dcm")).unwrap();
    let as_mask: Vec<bool> = vol.data.iter().map(|&v| v > 0.0).collect();
    medseg::io::nifti::write_mask(d.join("lac.nii.gz"), &as_mask, &vol).unwrap();
    let before = std::fs::read(d.join("lac.nii.gz")).unwrap();
    let csv = d.join("cases.csv");
    std::fs::write(
        &csv,
        "case_id,input,key_slice,x0,y0,x1,y1\nlac,mca.dcm,,30,40,90,100\nx2,lac.nii.gz,,30,40,90,100\n",
    )
    .unwrap();
    let run = batch_in(d, &csv, d);
    let (stdout, stderr) = text(&run);
    assert!(!run.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("case lac failed: output"), "{stderr}");
    assert!(
        stderr.contains("would overwrite the input of case x2"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(d.join("lac.nii.gz")).unwrap(),
        before,
        "x2's scan"
    );
    // The cases file called results.csv inside the output folder: refused whole.
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::copy(&csv, out.join("results.csv")).unwrap();
    let run = batch_in(d, &out.join("results.csv"), &out);
    let (_, stderr) = text(&run);
    assert!(
        !run.status.success() && stderr.contains("is the cases file"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("results.csv")).unwrap(),
        std::fs::read(&csv).unwrap()
    );
}

/// Issue #26 points 3, 4 and the stale-temporary, relative-mask items: results.csv keeps the
/// rows of every run (also of two batches at once), a changed case is redone with the reason,
/// a re-run from another working folder skips what is done.
#[test]
fn batch_results_keep_every_run_and_changed_cases_are_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (d, out) = (dir.path(), dir.path().join("out"));
    for name in ["a", "b", "c"] {
        std::fs::copy(testdata("CT_small.dcm"), d.join(format!("{name}.dcm"))).unwrap();
        std::fs::write(
            d.join(format!("{name}.csv")),
            format!("case_id,input,key_slice,x0,y0,x1,y1\n{name},{name}.dcm,,30,40,90,100\n"),
        )
        .unwrap();
    }
    std::fs::create_dir(&out).unwrap();
    let stale = out.join(".medseg-0-7.tmp.a.nii.gz");
    std::fs::write(&stale, "left by a killed run").unwrap();
    assert!(batch_in(d, &d.join("a.csv"), &out).status.success());
    assert!(
        !stale.exists(),
        "a dead process's temporary file is cleaned"
    );
    // Two batches of different cases at once: both rows are kept.
    let (b, c) = (d.join("b.csv"), d.join("c.csv"));
    let spawn = |csv: &std::path::Path| {
        medseg()
            .current_dir(d)
            .arg("batch")
            .arg(csv)
            .arg("--output-dir")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut pb, mut pc) = (spawn(&b), spawn(&c));
    assert!(pb.wait().unwrap().success() && pc.wait().unwrap().success());
    let ids: Vec<String> = rows(&out).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in ["a", "b", "c"] {
        assert!(ids.contains(&id.to_string()), "{ids:?}");
    }
    let a_row = rows(&out).into_iter().find(|r| r[0] == "a").unwrap();
    assert_eq!(a_row[7], "a.nii.gz", "mask relative to the output folder");
    // From another working folder: done, skipped.
    let elsewhere = tempfile::tempdir().unwrap();
    let again = batch_in(elsewhere.path(), &d.join("a.csv"), &out);
    assert!(
        text(&again).0.contains("1 ok (1 done before)"),
        "{:?}",
        text(&again)
    );
    // A changed box is redone, and says why.
    std::fs::write(
        d.join("a.csv"),
        "case_id,input,key_slice,x0,y0,x1,y1\na,a.dcm,,32,40,90,100\n",
    )
    .unwrap();
    let redo = batch_in(d, &d.join("a.csv"), &out);
    let (stdout, stderr) = text(&redo);
    assert!(stdout.contains("1 ok (0 done before)"), "{stdout}");
    assert!(
        stderr.contains("case a is redone: box changed (30 40 90 100 -> 32 40 90 100)"),
        "{stderr}"
    );
    // A changed input (a newer modification time) is redone too.
    let f = std::fs::File::options()
        .write(true)
        .open(d.join("a.dcm"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let (_, stderr) = text(&batch_in(d, &d.join("a.csv"), &out));
    assert!(
        stderr.contains("case a is redone: input_stamp changed"),
        "{stderr}"
    );
    assert_eq!(rows(&out).len(), 3);
}

/// Issue #26 point 7: refused before any work, each said once.
#[test]
fn batch_refuses_bad_cases_files_before_work_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = d.join("cases.csv");
    let h = "case_id,input,key_slice,x0,y0,x1,y1";
    let long = "c".repeat(240);
    for (body, needle) in [
        (format!("{h}\n{long},x.dcm,,1,1,9,9\n"), "at most 200"),
        (format!("{h}\n-A1-B1,x.dcm,,1,1,9,9\n"), "formula"),
        (
            format!("{h}\na,x.dcm,,1,1,9,9,brain\n"),
            "8 values, but the header names 7",
        ),
    ] {
        std::fs::write(&csv, &body).unwrap();
        let run = batch_in(d, &csv, &d.join("out"));
        let (_, stderr) = text(&run);
        assert!(!run.status.success() && stderr.contains(needle), "{stderr}");
        assert_eq!(stderr.matches("cohort case").count(), 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // A folder as the cases file: the OS's words once.
    let run = batch_in(d, d, &d.join("out"));
    let (_, stderr) = text(&run);
    assert_eq!(stderr.matches("os error 21").count(), 1, "{stderr}");
}

/// `medseg info` on a FIFO or a device returns at once with an error instead of blocking or
/// reading without end.
#[cfg(unix)]
#[test]
fn info_refuses_fifos_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("scan.dcm");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for p in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let run = medseg().arg("info").arg(p).output().unwrap();
        let (_, stderr) = text(&run);
        assert!(
            !run.status.success() && stderr.contains("not a regular file"),
            "{stderr}"
        );
    }
}
