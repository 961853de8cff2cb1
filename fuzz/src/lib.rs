//! The fuzz targets' bodies: each writes the input bytes to a file and reads it through the
//! same public entry point the CLI and the Python wheel use, then checks what a successful
//! read promises. A panic, an abort or an allocation past libFuzzer's limits is a finding.

use std::path::{Path, PathBuf};
use std::sync::Once;

use medseg::io;
use medseg::volume::{to_u8, Intensity, Volume};
use medseg::weights::StateDict;

/// The declared-size limit while fuzzing: 4 Mi voxels (16 MiB as f32), so a header that
/// declares more is refused before allocation, as a user's `MEDSEG_MAX_VOXELS` would.
const FUZZ_MAX_VOXELS: &str = "4194304";

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("MEDSEG_MAX_VOXELS", FUZZ_MAX_VOXELS);
        // libfuzzer-sys's panic hook aborts on every panic, even one that medseg catches at a
        // third-party decoder and returns as an error (see `medseg::io`'s decoder guard). Print
        // instead: a panic that escapes medseg still aborts (libfuzzer-sys catches it at the
        // target's boundary) and is reported as a crash.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    });
}

/// A scratch file per process and target (libFuzzer's `-fork`/`-jobs` run separate processes).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("medseg-fuzz-{}-{name}", std::process::id()))
}

fn with_file<T>(name: &str, data: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    init();
    let path = scratch(name);
    std::fs::write(&path, data).expect("scratch file");
    let out = f(&path);
    let _ = std::fs::remove_file(&path);
    out
}

/// What every volume a reader returns must satisfy.
fn check_volume(v: &Volume) {
    let n: usize = v.dims.iter().product();
    assert!(v.dims.iter().all(|&d| d > 0), "empty dims {:?}", v.dims);
    assert_eq!(v.data.len(), n, "data length vs dims {:?}", v.dims);
    assert!(
        n <= FUZZ_MAX_VOXELS.parse::<usize>().unwrap(),
        "limit bypassed: {:?}",
        v.dims
    );
    assert!(
        v.data.iter().all(|x| x.is_finite()),
        "non-finite voxel accepted"
    );
    assert!(
        v.spacing.iter().all(|s| s.is_finite() && *s > 0.0),
        "spacing {:?}",
        v.spacing
    );
    assert!(v.voxel_ml().is_finite());
    // The 8-bit mapping the models see, for every rule: one byte per voxel, no panic.
    let slice = v.slice(v.dims[0] / 2);
    for rule in [
        Intensity::default_for(v.modality),
        Intensity::Percentile,
        Intensity::MinMax,
    ] {
        assert_eq!(to_u8(slice, rule).len(), slice.len());
    }
}

/// `.pth` (zip + pickle) and `.safetensors` checkpoints, chosen by content as `StateDict::load`
/// does. A checkpoint that loads must round-trip through safetensors unchanged.
pub fn checkpoint(data: &[u8]) {
    let Ok(sd) = with_file("ckpt.pth", data, |p| StateDict::load(p)) else {
        return;
    };
    let mut total = 0usize;
    for (name, t) in &sd.tensors {
        let n: usize = t.shape.iter().product();
        assert_eq!(
            t.data.len(),
            n,
            "{name}: {} values for {:?}",
            t.data.len(),
            t.shape
        );
        total += n;
    }
    let _ = sd.check_finite();
    let _ = medseg::ModelFamily::detect(&sd); // every family's layout (MedSAM2's among the seeds)
    if total <= 1 << 20 {
        let path = scratch("roundtrip.safetensors");
        sd.save_safetensors(&path)
            .expect("a loaded state_dict saves");
        let back = StateDict::from_safetensors(&path).expect("and loads back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.tensors.len(), sd.tensors.len());
        for (name, t) in &sd.tensors {
            let b = &back.tensors[name];
            assert_eq!(b.shape, t.shape, "{name}");
            // Compare bit patterns: NaN payloads must survive too.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            if t.is_float {
                assert_eq!(bits(&b.data), bits(&t.data), "{name}");
            }
        }
    }
}

/// Inputs starting with this are a series: files separated by [`SERIES_NEXT`].
pub const SERIES_MAGIC: &[u8] = b"MEDSEG-SERIES\0";
/// Separates the files of a series input.
pub const SERIES_NEXT: &[u8] = b"\0MEDSEG-NEXT\0";

/// One DICOM file (any transfer syntax the readers know, compressed pixel data included), or,
/// behind [`SERIES_MAGIC`], a series folder of up to 16 files read with each uneven-slice
/// policy (the geometry checks: sizes, orientations, duplicates, gaps, shear).
pub fn dicom(data: &[u8]) {
    if let Some(series) = data.strip_prefix(SERIES_MAGIC) {
        return dicom_series(series);
    }
    if let Ok(v) = with_file("file.dcm", data, |p| io::dicom::read_file(p)) {
        check_volume(&v);
    }
}

fn dicom_series(data: &[u8]) {
    init();
    let dir = scratch("series");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let mut rest = data;
    for k in 0..16 {
        let (file, next) = match rest.windows(SERIES_NEXT.len()).position(|w| w == SERIES_NEXT) {
            Some(i) => (&rest[..i], Some(&rest[i + SERIES_NEXT.len()..])),
            None => (rest, None),
        };
        std::fs::write(dir.join(format!("s{k:02}.dcm")), file).expect("scratch file");
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    use io::{ReadOptions, UnevenSlices};
    for uneven_slices in [UnevenSlices::Error, UnevenSlices::Resample, UnevenSlices::AsIs] {
        let opts = ReadOptions { uneven_slices };
        if let Ok(v) = io::dicom::read_series_with(&dir, &opts) {
            check_volume(&v);
            assert!(
                v.affine.iter().flatten().all(|x| x.is_finite()),
                "non-finite affine {:?}",
                v.affine
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// NIfTI-1 (`.nii`, or `.nii.gz` when the bytes are gzip). A volume that reads must write
/// back as float32 NIfTI and read again with the same dimensions and values.
pub fn nifti(data: &[u8]) {
    let name = if data.starts_with(&[0x1f, 0x8b]) {
        "vol.nii.gz"
    } else {
        "vol.nii"
    };
    let Ok(v) = with_file(name, data, |p| io::nifti::read(p)) else {
        return;
    };
    check_volume(&v);
    let mask = vec![true; v.data.len()];
    let out = scratch("mask.nii");
    io::nifti::write_mask(&out, &mask, &v).expect("a mask for a volume that was read writes");
    let back = io::nifti::read(&out);
    let _ = std::fs::remove_file(&out);
    let back = back.expect("the written mask reads back");
    assert_eq!(back.dims, v.dims);
}

/// PNG/JPEG: the 8-bit 2D contract (`read_png`), the intensity-data path
/// (`read_image_volume`), and the resamplers that feed both models.
pub fn png(data: &[u8]) {
    let (img, vol, depth) = with_file("image.png", data, |p| {
        (
            io::read_png(p),
            io::read_image_volume(p),
            io::image_bit_depth(p),
        )
    });
    if let Ok(d) = depth {
        assert!(matches!(d, 8 | 16 | 32), "bit depth {d}");
    }
    if let Ok(v) = vol {
        check_volume(&v);
    }
    if let Ok(img) = img {
        assert_eq!(img.data.len(), img.width * img.height * img.channels);
        if img.width * img.height <= 1 << 16 && data.len() >= 2 {
            let frame = medseg::Frame::new(medseg::ModelFamily::LiteMedSam, (img.height, img.width));
            let lite = frame.input(&img).expect("the frame of this image");
            assert_eq!(lite.data.len(), 3 * 256 * 256);
            assert!(lite.data.iter().all(|x| x.is_finite()));
            let (ch, cw) = lite.content;
            assert!(ch >= 1 && cw >= 1 && ch <= 256 && cw <= 256);
            // MedSAM's resampler (its 1024² output is too slow to fuzz with): the same
            // cubic-spline resize to sizes taken from the input's last bytes, enlarging and
            // shrinking (the anti-aliased path).
            let k = data.len();
            let dh = 1 + data[k - 1] as usize % 48;
            let dw = 1 + data[k - 2] as usize % 48;
            let (h, w, c) = (img.height, img.width, img.channels);
            let out = medseg::preprocess::skimage_resize_u8(&img.data, h, w, c, dh, dw);
            assert_eq!(out.len(), dh * dw * c);
            let out = medseg::preprocess::resize_area_u8(&img.data, h, w, c, dh, dw);
            assert_eq!(out.len(), dh * dw * c);
        }
    }
}

/// Box strings as typed on the command line, then checked against an image size taken from
/// the first bytes; a box that passes must map into the model frame without leaving it.
pub fn prompt(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let h = u16::from_le_bytes([data[0], data[1]]) as usize;
    let w = u16::from_le_bytes([data[2], data[3]]) as usize;
    let Ok(text) = std::str::from_utf8(&data[4..]) else {
        return;
    };
    let Ok(b) = medseg::prompt::parse_box(text) else {
        return;
    };
    assert!(b.iter().all(|v| v.is_finite()));
    let p = medseg::Prompt::from_box(b);
    if p.validate((h, w)).is_ok() {
        assert!(h > 0 && w > 0);
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f64 && b[3] <= h as f64);
        assert!(b[0] < b[2] && b[1] < b[3]);
        // The LiteMedSAM frame (longest side → 256) and MedSAM's (each side → 1024).
        let r = 256.0 / h.max(w) as f64;
        for (i, &v) in b.iter().enumerate() {
            let lite = ((v * r) as i64) as f64;
            assert!((0.0..=256.0).contains(&lite), "lite {lite}");
            let s = if i % 2 == 0 { w } else { h } as f64;
            let sam = v / s * 1024.0;
            assert!((0.0..=1024.0).contains(&sam), "sam {sam}");
        }
    }
}

/// The series a fuzzed SEG is read onto: `series/clean` of `tests/data/fetch.sh` (the seeds in
/// `seeds/seg/` reference its instances, so the reader gets past the reference checks).
fn seg_source() -> &'static Volume {
    static SOURCE: std::sync::OnceLock<Volume> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = std::env::var_os("MEDSEG_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testdata"))
            .join("series/clean");
        io::read_volume(&dir).unwrap_or_else(|e| {
            panic!("the seg target reads onto {} (run tests/data/fetch.sh): {e}", dir.display())
        })
    })
}

/// DICOM Segmentation objects: `io::describe_seg`, and `io::read_seg` onto the clean crafted
/// series. A SEG that reads gives one mask per described segment, each on the source's grid.
pub fn seg(data: &[u8]) {
    init();
    let source = seg_source();
    let (info, masks) = with_file("seg.dcm", data, |p| {
        (io::describe_seg(p), io::read_seg(p, source))
    });
    if let Ok(m) = masks {
        assert_eq!(m.masks.len(), m.info.segments.len());
        assert!(m.masks.iter().all(|k| k.len() == source.data.len()));
        assert_eq!(info.ok().as_ref(), Some(&m.info), "describe and read agree");
    }
}
