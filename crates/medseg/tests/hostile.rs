//! Hostile checkpoints (crafted by `tests/reference/make_hostile.py`, committed in
//! `tests/fixtures/hostile/`): each is refused with a specific error, nothing is executed,
//! nothing huge is allocated.

mod common;

use common::fixtures;
use medseg::weights::StateDict;
use medseg::Error;

fn hostile(name: &str) -> std::path::PathBuf {
    fixtures().join("hostile").join(name)
}

fn refused(name: &str, needle: &str) {
    match StateDict::load(hostile(name)) {
        Err(e @ Error::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.to_lowercase().contains(&needle.to_lowercase()),
                "{name}: {msg}"
            );
        }
        other => panic!("{name}: expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn the_control_file_loads() {
    let sd = StateDict::load(hostile("tiny_valid.pth")).unwrap();
    let w = &sd.tensors["w"];
    assert_eq!(w.shape, vec![2, 3]);
    assert_eq!(w.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn pickles_that_call_code_are_refused_and_never_run() {
    let marker = std::path::Path::new("/tmp/medseg-pwned");
    let _ = std::fs::remove_file(marker);
    refused("exec_os_system.pth", "posix.system");
    refused("exec_eval.pth", "__builtin__.eval"); // protocol 2 spells builtins so
    refused("raw_pickle_os_system.pth", "posix.system");
    assert!(!marker.exists(), "a checkpoint executed code");
}

#[test]
fn inconsistent_sizes_are_refused_before_allocation() {
    refused("storage_too_small.pth", "only 2 are available");
    let t = std::time::Instant::now();
    refused("huge_declared_size.pth", "needs 1099511627776 elements");
    assert!(
        t.elapsed().as_secs() < 5,
        "the huge declared size was not refused up front"
    );
}

#[test]
fn archive_tricks_are_refused() {
    refused("path_traversal.pth", "path traversal");
    refused("truncated_zip.pth", "zip archive");
}

/// The members of a zip checkpoint, in order.
fn members(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut m = z.by_index(i).unwrap();
            let mut v = Vec::new();
            m.read_to_end(&mut v).unwrap();
            (m.name().unwrap().to_string(), v)
        })
        .collect()
}

/// A benign `data.pkl` listed first, the hostile archive's members after it: the scanner and
/// the reader must not look at different pickles (the reader takes the shortest root).
#[test]
fn a_second_pickle_member_is_refused() {
    use std::io::Write;
    let benign = members(&hostile("tiny_valid.pth"));
    let (_, benign_pkl) = benign
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two_pickles.pt");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/zz/zzdata.pkl", opts).unwrap();
    w.write_all(benign_pkl).unwrap();
    for (name, bytes) in members(&hostile("exec_os_system.pth")) {
        w.start_file(name, opts).unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap();
    match StateDict::load(&path) {
        Err(e @ Error::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("2 pickle members"), "{msg}");
            assert!(msg.contains("archive/zz/zzdata.pkl"), "{msg}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// A FIFO would block a reader forever and a device would feed it without end: both are
/// refused before anything opens them.
#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_before_opening() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.nii.gz");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "mkfifo is needed for this test"
    );
    for p in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        for e in [
            medseg::io::read_volume(p).map(|_| ()).unwrap_err(),
            StateDict::load(p).map(|_| ()).unwrap_err(),
        ] {
            assert!(
                e.to_string().contains("not a regular file"),
                "{}: {e}",
                p.display()
            );
        }
    }
}

#[test]
fn lying_safetensors_headers_are_refused() {
    refused("safetensors_lying_offsets.safetensors", "not fully covered");
    refused("safetensors_huge_header.safetensors", "header too large");
    let sd = StateDict::load(hostile("safetensors_nan.safetensors")).unwrap();
    match sd.check_finite() {
        Err(Error::NonFiniteWeights { name, count }) => {
            assert_eq!((name.as_str(), count), ("w", 2))
        }
        other => panic!("expected NonFiniteWeights, got {other:?}"),
    }
}

/// A DICOM fuzz finding (`fuzz/regressions/dicom/NAME`) is refused with an `Error::Dicom`
/// whose reason holds every one of `needles`.
fn dicom_refused(name: &str, needles: &[&str]) {
    let path = regressions().join("dicom").join(name);
    match medseg::io::dicom::read_file(&path) {
        Err(Error::Dicom { reason, .. }) => {
            for n in needles {
                assert!(reason.contains(n), "{name}: {reason} lacks {n:?}");
            }
        }
        other => panic!("{name}: expected an Error::Dicom, got {other:?}"),
    }
}

fn regressions() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions")
}

/// Inputs found by the fuzz targets (`fuzz/regressions/<target>/`): each is refused with a
/// specific error, without the allocation that the declared sizes asked for.
#[test]
fn fuzz_findings_are_refused() {
    let root = regressions();
    // A 17 KB DICOM file whose OB element declares 2.8 GB: dicom-rs would allocate and
    // zero-fill that before failing to read it; the length walk refuses it first.
    let name = "oom-declared-value-length-2.8GB.dcm";
    assert!(
        std::fs::metadata(root.join("dicom").join(name))
            .unwrap()
            .len()
            < 20_000
    );
    // The walk now stops it one step earlier, at a header without a VR ((FE00,0A00) "\x01\x19")
    // that put dicom-parser out of step before it reached the 2.8 GB length.
    dicom_refused(name, &["(FE00,0A00)", "no valid VR"]);
    // An UL element of 2 bytes: dicom-rs reads no number but counts 2 bytes, so every later
    // header is read 2 bytes early, and pixel data bytes became a 0xFFFF0000-byte length.
    dicom_refused(
        "ul-length-2-misaligns-dicom-rs.dcm",
        &["not a multiple of 4"],
    );
    // A JPEG 2000 frame whose codestream declares a far larger image than the DICOM header:
    // openjp2 allocated 640 MB for it; the SIZ marker is checked first.
    // The finding as found also has a header without a VR (refused first since the VR check);
    // the same file with that VR set to UN reaches the SIZ check.
    dicom_refused(
        "j2k-frame-declares-640MB.dcm",
        &["(0010,0000)", "no valid VR"],
    );
    dicom_refused(
        "j2k-frame-declares-640MB-vr-un.dcm",
        &["compressed frame declares"],
    );
    // An RLE frame whose segment is shorter than the frame: dicom-rs 0.10.1 indexes past it
    // (a panic); medseg returns the panic as an error.
    dicom_refused("rle-short-segment-panics-dicom-rs.dcm", &["decoder failed"]);
    // An RLE header declaring 203 M segments (dicom-rs allocated the count, 814 MB).
    dicom_refused(
        "rle-header-declares-200M-segments.dcm",
        &["RLE fragment", "at most 15"],
    );
    // Structures the walk must read as dicom-parser does, to see the length dicom-rs would
    // allocate: an (FFFE,xxxx) element with a value; an undefined-length OB read as a sequence.
    // (Since the VR check, the first is refused one header earlier: "ss" is no VR.)
    dicom_refused("unknown-fffe-tag-with-a-value.dcm", &["no valid VR"]);
    dicom_refused("undefined-length-ob-read-as-sequence.dcm", &["no valid VR"]);
    // Two findings of the seg target: broken sequence structure ahead of header bytes that are
    // no VR ("\0\0"); dicom-parser read them out of step with the walk and zero-filled 4.28 GB
    // (3.2 GB for the second) for a misread length. The walk now follows dicom-parser's
    // structure and refuses what it would read out of step (the VR check alone: unit tests in
    // `io::dicom_guard`).
    dicom_refused(
        "invalid-vr-bytes-misalign-dicom-rs.dcm",
        &["(FFFE,E0DD)", "where an element belongs"],
    );
    dicom_refused(
        "item-among-elements-misaligns-dicom-rs.dcm",
        &["(FFFE,E000)", "where an element belongs"],
    );
    // Big-endian NIfTI with less data than the header declares: the nifti crate panicked
    // while swapping bytes; the length check refuses it first.
    let nii = root.join("nifti/big-endian-truncated-data.nii");
    match medseg::io::nifti::read(&nii) {
        Err(Error::Nifti { reason, .. }) => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("expected a truncated-NIfTI error, got {other:?}"),
    }
    // A picture whose foreground is nearly all one grey level: the MR percentile window's
    // interpolation gave lo = 255.00000000000003 > hi = 255 and `clamp` panicked.
    let png = root.join("png/mr-percentile-equal-ranks.png");
    let vol = medseg::io::read_image_volume(&png).unwrap();
    let u8s = medseg::volume::to_u8(&vol.data, medseg::Intensity::Percentile);
    assert_eq!(u8s.len(), vol.data.len());
}
