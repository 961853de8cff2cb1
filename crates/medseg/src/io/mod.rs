//! Files (no Burn): PNG/JPEG in and out, `.npy` arrays, DICOM and NIfTI volumes.

use std::path::Path;

use crate::error::{Error, Result};
use crate::preprocess::Image;

/// Read an 8-bit grey or RGB image (PNG, JPEG). An alpha channel is dropped; 16-bit images
/// are refused (the 2D contract is 8-bit).
pub fn read_png(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let codec = |reason: String| Error::ImageCodec {
        path: path.to_path_buf(),
        reason,
    };
    let img = decode_checked(path)?;
    use image::DynamicImage as D;
    match img {
        D::ImageLuma8(g) => Image::new(g.width() as usize, g.height() as usize, 1, g.into_raw()),
        D::ImageLumaA8(_) => {
            let g = img.to_luma8();
            Image::new(g.width() as usize, g.height() as usize, 1, g.into_raw())
        }
        D::ImageRgb8(c) => Image::new(c.width() as usize, c.height() as usize, 3, c.into_raw()),
        D::ImageRgba8(_) => {
            let c = img.to_rgb8();
            Image::new(c.width() as usize, c.height() as usize, 3, c.into_raw())
        }
        other => Err(codec(format!(
            "unsupported pixel format {:?}; expected 8-bit grey or RGB",
            other.color()
        ))),
    }
}

/// An image reader whose declared dimensions are checked against [`max_voxels`] before any
/// pixel buffer is allocated.
fn image_reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    check_input(path)?;
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // The decoders compare the declared size with `max_alloc` before allocating.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((max_voxels() as u64).saturating_mul(8));
    reader.limits(limits);
    Ok(reader)
}

/// Decode an image after checking its declared width × height against [`max_voxels`] (the
/// decoders' own byte limit alone let a 217 × 62736 grey PNG past a 4 Mi-voxel limit).
fn decode_checked(path: &Path) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let codec = |reason: String| Error::ImageCodec {
        path: path.to_path_buf(),
        reason,
    };
    let decoder = image_reader(path)?
        .into_decoder()
        .map_err(|e| codec(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_declared_size(path, &[h as usize, w as usize])?;
    image::DynamicImage::from_decoder(decoder).map_err(|e| codec(e.to_string()))
}

/// Read a PNG/JPEG of any supported depth (8- or 16-bit, grey or RGB; RGB is averaged) as a
/// one-slice volume of raw intensities, for images that are data rather than pictures
/// (e.g. 16-bit CT exports). An image has no voxel size: 1 mm is assumed
/// ([`Volume::spacing_known`](crate::Volume::spacing_known) is `false`).
pub fn read_image_volume(path: impl AsRef<Path>) -> Result<crate::volume::Volume> {
    let path = path.as_ref();
    let img = decode_checked(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = match img.color().channel_count() {
        1 | 2 => img.to_luma32f().into_raw(),
        _ => img
            .to_rgb32f()
            .into_raw()
            .chunks_exact(3)
            .map(|p| (p[0] + p[1] + p[2]) / 3.0)
            .collect(),
    };
    // to_*32f scales to [0, 1]; give back the stored integer levels.
    let scale = if img.color().bytes_per_pixel() / img.color().channel_count() >= 2 {
        65535.0
    } else {
        255.0
    };
    let data = data.into_iter().map(|v| (v * scale).round()).collect();
    let mut vol =
        crate::volume::Volume::new(data, [1, h, w], [1.0; 3], crate::volume::Modality::Other)?;
    vol.spacing_known = false;
    vol.source = crate::source::Source::Image;
    Ok(vol)
}

/// Bits per channel of an image file (8 or 16).
pub fn image_bit_depth(path: impl AsRef<Path>) -> Result<u8> {
    let path = path.as_ref();
    check_input(path)?;
    let dec = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_decoder()
        .map_err(|e| Error::ImageCodec {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    use image::ImageDecoder;
    let c = dec.color_type();
    Ok(8 * c.bytes_per_pixel() / c.channel_count())
}

/// Write a binary mask as an 8-bit grey PNG (255 inside, 0 outside).
pub fn write_mask_png(
    path: impl AsRef<Path>,
    mask: &[bool],
    width: usize,
    height: usize,
) -> Result<()> {
    let path = path.as_ref();
    let data: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
    let buf = image::GrayImage::from_raw(width as u32, height as u32, data).ok_or_else(|| {
        Error::InvalidImage(format!(
            "mask of {} values for {width}x{height}",
            mask.len()
        ))
    })?;
    buf.save(path).map_err(|e| Error::ImageCodec {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Write a float32 `.npy` array.
pub fn write_npy_f32(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    let path = path.as_ref();
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data.to_vec())
        .map_err(|e| Error::InvalidImage(e.to_string()))?;
    ndarray_npy::write_npy(path, &arr).map_err(|e| Error::ImageCodec {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Read a float32 `.npy` array: (values, shape).
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let arr: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| Error::ImageCodec {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let shape = arr.shape().to_vec();
    Ok((arr.into_iter().collect(), shape))
}

#[cfg(feature = "dicom")]
pub mod dicom;
#[cfg(feature = "dicom")]
mod dicom_guard;
#[cfg(feature = "dicom")]
mod geometry;
pub mod mask;
pub mod output;
#[cfg(feature = "dicom")]
pub mod seg;
#[cfg(feature = "dicom")]
pub mod seg_read;
pub mod segment;
#[cfg(feature = "dicom")]
pub use geometry::UnevenSlices;
#[cfg(feature = "dicom")]
pub use seg_read::{describe_seg, read_seg};

/// How volumes are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// DICOM series (and enhanced multi-frame objects) whose slices are not evenly spaced:
    /// refused by default.
    #[cfg(feature = "dicom")]
    pub uneven_slices: UnevenSlices,
}
#[cfg(feature = "nifti")]
pub mod nifti;

/// Run a third-party decoder on untrusted bytes, turning a panic inside it into an error.
///
/// dicom-rs and the nifti crate index past buffers on some malformed inputs (found by the fuzz
/// targets in `fuzz/`; e.g. a short RLE segment); such a panic must not cross medseg's API.
/// Needs the default `panic = "unwind"`.
#[cfg(any(feature = "dicom", feature = "nifti"))]
pub(crate) fn guard_decoder<T>(
    f: impl FnOnce() -> Result<T>,
    err: impl FnOnce(String) -> Error,
) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(err(format!("the decoder failed on malformed data ({msg})")))
        }
    }
}

/// Largest volume (in voxels) a reader accepts, checked against the file's declared size
/// before the pixel data is allocated (and against a numpy array's shape before it is copied):
/// `$MEDSEG_MAX_VOXELS`, default 2²⁸ (268 M voxels, e.g. 512 × 512 × 1024). Reading peaks at
/// about 8 bytes per voxel — the decoded file data, the decoder's f32 array and the volume's
/// working copies (measured: a 640³ int16 `.nii.gz` took 2.07 GB in `medseg info`) — so the
/// default keeps a read near 2 GB; raise it for larger scans on machines with the memory.
pub fn max_voxels() -> usize {
    std::env::var("MEDSEG_MAX_VOXELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 28)
}

/// Refuse a declared size over [`max_voxels`].
pub(crate) fn check_declared_size(path: &Path, dims: &[usize]) -> Result<()> {
    let total = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match total {
        Some(n) if n <= max_voxels() => Ok(()),
        _ => Err(Error::InvalidImage(format!(
            "{}: declared size {dims:?} exceeds the limit of {} voxels (MEDSEG_MAX_VOXELS)",
            path.display(),
            max_voxels()
        ))),
    }
}

/// What kind of file or folder an input path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// PNG, JPEG or another 2D picture.
    Image,
    /// One DICOM file.
    Dicom,
    /// A folder of DICOM files (one series).
    DicomSeries,
    /// NIfTI-1 (`.nii`, `.nii.gz`).
    Nifti,
}

/// Refuse what is neither a regular file nor a folder (links followed) before anything opens
/// it: a FIFO would block the reader forever, `/dev/zero` would fill the memory, a socket or
/// device is no image. Missing paths are an [`Error::Io`] saying so.
pub fn check_input(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() || meta.is_dir() {
        return Ok(());
    }
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file or folder (a FIFO, device or socket): medseg reads files and \
             folders only",
        ),
    ))
}

/// Guess the input kind from the path (a folder is a DICOM series; `.nii`/`.nii.gz` NIfTI;
/// `.dcm` or a `DICM` preamble DICOM; anything else an image).
pub fn input_kind(path: &Path) -> InputKind {
    if path.is_dir() {
        return InputKind::DicomSeries;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        return InputKind::Nifti;
    }
    if name.ends_with(".dcm") || name.ends_with(".dicom") {
        return InputKind::Dicom;
    }
    if !path.is_file() {
        return InputKind::Image; // never open a FIFO or device to sniff it (`check_input`)
    }
    let mut head = [0u8; 132];
    if let Ok(mut f) = std::fs::File::open(path) {
        use std::io::Read;
        if f.read_exact(&mut head).is_ok() && &head[128..132] == b"DICM" {
            return InputKind::Dicom;
        }
    }
    InputKind::Image
}

/// Read any supported input as a volume: an image (one slice), a DICOM file or series
/// folder, or a NIfTI file. What the reader found worth telling (duplicates dropped, a sheared
/// stack, the modality assumed, ...) is in [`Volume::notes`](crate::Volume::notes).
pub fn read_volume(path: impl AsRef<Path>) -> Result<crate::volume::Volume> {
    read_volume_with(path, &ReadOptions::default())
}

/// [`read_volume`] with options.
pub fn read_volume_with(
    path: impl AsRef<Path>,
    #[allow(unused_variables)] opts: &ReadOptions,
) -> Result<crate::volume::Volume> {
    let path = path.as_ref();
    check_input(path)?;
    match input_kind(path) {
        InputKind::Image => read_image_volume(path),
        #[cfg(feature = "dicom")]
        InputKind::Dicom => dicom::read_file_with(path, opts),
        #[cfg(feature = "dicom")]
        InputKind::DicomSeries => dicom::read_series_with(path, opts),
        #[cfg(feature = "nifti")]
        InputKind::Nifti => nifti::read(path),
        #[allow(unreachable_patterns)]
        other => Err(Error::InvalidImage(format!(
            "{other:?} input needs medseg built with the matching feature"
        ))),
    }
}
