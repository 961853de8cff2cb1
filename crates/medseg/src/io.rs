//! Image and array files (no Burn): PNG/JPEG in and out, `.npy` arrays.

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
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader.decode().map_err(|e| codec(e.to_string()))?;
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
