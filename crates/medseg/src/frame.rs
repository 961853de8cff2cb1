//! Each family's frame: where an image sits inside the square model input, and every mapping
//! between image pixels and that frame, exactly as the family's official script does it.
//! This is the only place that knows a family's geometry (as `ResizeLongestSide` is in Meta's
//! `segment_anything`); the segmenter and the 3D propagation only call it. It matches on the
//! family's [`Geometry`] (its row in `family.rs`), never on the family itself.
//!
//! * MedSAM (`MedSAM_Inference.py`): the image stretched to 1024×1024 (cubic spline,
//!   anti-aliased) → `uint8` → min-max; boxes and points scaled per axis as floats; low-res
//!   logits → sigmoid → bilinear to the image size → `> 0.5`.
//! * LiteMedSAM (`CVPR24_LiteMedSAM_infer.py`): longest side to 256 (`INTER_AREA`), min-max,
//!   zero-padded bottom/right; boxes floored after scaling; low-res logits cropped to the
//!   content, bilinear to the image size, sigmoid → `> 0.5`.
//! * MedSAM2 (`medsam2_infer_3D_CT.py`): each slice as an RGB PIL image resized to 512×512
//!   (Pillow's bicubic, aspect ratio not kept) → /255 → ImageNet mean/std; boxes and points
//!   scaled per axis in `float32` (`box / [W, H, W, H] * 512`); 128×128 low-res logits →
//!   bilinear to the image size → `> 0`.
//!
//! No Burn: plain arrays in and out.

use crate::error::{Error, Result};
use crate::family::{Geometry, ModelFamily};
use crate::preprocess::{
    antialias_resize, bilinear_resize, crop, normalise_into_frame, pil_bicubic_resize_u8,
    resize_area_u8, sigmoid, skimage_resize_u8, Image, ModelInput,
};

/// Side of the SAM families' low-res masks (and of a mask prompt); MedSAM2's are 128
/// ([`ModelFamily::low_res_side`]).
pub const LOW_RES: usize = 256;

/// Values in one low-res mask plane.
pub const LOW_RES_LEN: usize = LOW_RES * LOW_RES;

/// An image of `original` size inside `family`'s model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// The family whose frame this is.
    pub family: ModelFamily,
    /// `(height, width)` of the image.
    pub original: (usize, usize),
    /// `(height, width)` of the resized image inside the model input (top-left corner).
    pub content: (usize, usize),
}

/// The box the chain rule gives the next slice: in the model frame and in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextBox {
    /// In the model frame (what the prompt encoder takes).
    pub model: [f32; 4],
    /// In image pixels (for overlays).
    pub pixels: [f64; 4],
}

impl Frame {
    /// The frame of an image of `(height, width)` for `family`.
    pub fn new(family: ModelFamily, original: (usize, usize)) -> Self {
        let (h, w) = original;
        let content = match family.spec().geometry {
            Geometry::Stretch | Geometry::Sam2 => {
                let s = family.image_size();
                (s, s)
            }
            Geometry::LongestSide => {
                let s = longest_side_scale(original);
                let round = |v: usize| (((v as f64 * s) + 0.5) as usize).max(1);
                (round(h), round(w))
            }
        };
        Self {
            family,
            original,
            content,
        }
    }

    /// Side of the square model input.
    pub fn side(&self) -> usize {
        self.family.image_size()
    }

    /// The model input for `image` (which must have this frame's size).
    pub fn input(&self, image: &Image) -> Result<ModelInput> {
        if (image.height, image.width) != self.original {
            return Err(Error::InvalidImage(format!(
                "a {}x{} image in the frame of a {}x{} one",
                image.width, image.height, self.original.1, self.original.0
            )));
        }
        let rgb = image.to_rgb();
        let (h, w) = self.original;
        let (ch, cw) = self.content;
        let resized = match self.family.spec().geometry {
            Geometry::Stretch => skimage_resize_u8(&rgb.data, h, w, 3, ch, cw),
            Geometry::LongestSide => resize_area_u8(&rgb.data, h, w, 3, ch, cw),
            Geometry::Sam2 => return Ok(imagenet_input(&rgb.data, (h, w), self.side())),
        };
        Ok(ModelInput {
            data: normalise_into_frame(&resized, ch, cw, self.side()),
            size: self.side(),
            content: self.content,
        })
    }

    /// A box `[x0, y0, x1, y1]` in image pixels → the model frame.
    pub fn box_to_model(&self, b: [f64; 4]) -> [f32; 4] {
        let (h, w) = self.original;
        match self.family.spec().geometry {
            Geometry::Stretch => {
                let s = [w, h, w, h];
                let side = self.side() as f64;
                std::array::from_fn(|i| (b[i] / s[i] as f64 * side) as f32)
            }
            Geometry::Sam2 => {
                let s = [w, h, w, h];
                let side = self.side() as f32;
                std::array::from_fn(|i| b[i] as f32 / s[i] as f32 * side)
            }
            Geometry::LongestSide => {
                let r = longest_side_scale(self.original);
                std::array::from_fn(|i| ((b[i] * r) as i64) as f32)
            }
        }
    }

    /// A point `[x, y]` in image pixels → the model frame.
    pub fn point_to_model(&self, p: [f64; 2]) -> [f32; 2] {
        let (h, w) = self.original;
        match self.family.spec().geometry {
            Geometry::Stretch => {
                let side = self.side() as f64;
                [
                    (p[0] / w as f64 * side) as f32,
                    (p[1] / h as f64 * side) as f32,
                ]
            }
            Geometry::Sam2 => {
                let side = self.side() as f32;
                [p[0] as f32 / w as f32 * side, p[1] as f32 / h as f32 * side]
            }
            Geometry::LongestSide => {
                let r = longest_side_scale(self.original);
                [(p[0] * r) as f32, (p[1] * r) as f32]
            }
        }
    }

    /// A binary mask at the image size → a mask prompt in the model frame (`add_new_mask`:
    /// resized to `S × S` by anti-aliased bilinear, `>= 0.5`, unless already that size), `0.0`
    /// or `1.0`. Only MedSAM2 takes whole masks as prompts.
    pub fn mask_to_model(&self, mask: &[bool]) -> Result<Vec<f32>> {
        let (h, w) = self.original;
        if mask.len() != h * w {
            return Err(Error::InvalidPrompt(format!(
                "a mask of {} values on a {w}x{h} slice",
                mask.len()
            )));
        }
        let side = self.side();
        let m: Vec<f32> = mask.iter().map(|&v| f32::from(u8::from(v))).collect();
        match self.family.spec().geometry {
            Geometry::Sam2 if (h, w) == (side, side) => Ok(m),
            Geometry::Sam2 => Ok(antialias_resize(&m, h, w, side, side)
                .into_iter()
                .map(|v| f32::from(u8::from(v >= 0.5)))
                .collect()),
            _ => Err(Error::InvalidPrompt(format!(
                "{} takes boxes and points; mask prompts need MedSAM2",
                self.family.name()
            ))),
        }
    }

    /// One plane of low-res logits (256², MedSAM2 128²) → the binary mask at the image size.
    pub fn mask(&self, logits: &[f32]) -> Vec<bool> {
        let (h, w) = self.original;
        match self.family.spec().geometry {
            Geometry::Sam2 => self
                .logits_at_image(logits)
                .into_iter()
                .map(|v| v > 0.0)
                .collect(),
            Geometry::Stretch => {
                let prob: Vec<f32> = logits.iter().map(|&v| sigmoid(v)).collect();
                bilinear_resize(&prob, LOW_RES, LOW_RES, h, w)
                    .into_iter()
                    .map(|p| p > 0.5)
                    .collect()
            }
            Geometry::LongestSide => self
                .logits_at_image(logits)
                .into_iter()
                .map(|v| sigmoid(v) > 0.5)
                .collect(),
        }
    }

    /// One `256 × 256` plane of low-res logits → logits at the image size (`SamPredictor`'s
    /// `return_logits`): the content cropped (LiteMedSAM) and upsampled bilinearly. For
    /// LiteMedSAM these are exactly the values [`Frame::mask`] thresholds; MedSAM's official
    /// mask interpolates probabilities instead, so on its boundary pixels `logit > 0` and the
    /// mask can differ.
    pub fn logits_at_image(&self, logits: &[f32]) -> Vec<f32> {
        let (h, w) = self.original;
        let (ch, cw) = self.content;
        match self.family.spec().geometry {
            Geometry::Stretch => bilinear_resize(logits, LOW_RES, LOW_RES, h, w),
            Geometry::Sam2 => {
                let s = self.family.low_res_side();
                bilinear_resize(logits, s, s, h, w)
            }
            Geometry::LongestSide => bilinear_resize(&crop(logits, LOW_RES, ch, cw), ch, cw, h, w),
        }
    }

    /// The chain rule of LiteMedSAM's 3D script (`get_bbox256`): the bounding box of the
    /// previous slice's mask, grown by `margin` pixels at the 256 scale; `None` when the mask
    /// is empty. LiteMedSAM takes it on the mask resized into its frame; MedSAM on the mask
    /// itself, the margin scaled to the image. MedSAM2 propagates by its memory, never by
    /// boxes: `None`.
    pub fn next_box(&self, prev_mask: &[bool], margin: usize) -> Option<NextBox> {
        let (h, w) = self.original;
        let s = longest_side_scale(self.original);
        let prev: Vec<u8> = prev_mask.iter().map(|&m| u8::from(m)).collect();
        match self.family.spec().geometry {
            Geometry::Sam2 => None,
            Geometry::LongestSide => {
                let (ch, cw) = self.content;
                let small = resize_area_u8(&prev, h, w, 1, ch, cw);
                let mut padded = vec![0u8; LOW_RES_LEN];
                for y in 0..ch {
                    padded[y * LOW_RES..y * LOW_RES + cw].copy_from_slice(&small[y * cw..][..cw]);
                }
                grown_bbox(&padded, LOW_RES, LOW_RES, margin).map(|b| NextBox {
                    model: b.map(|v| v as f32),
                    pixels: b.map(|v| v as f64 / s),
                })
            }
            Geometry::Stretch => {
                let shift = (margin as f64 / s).round() as usize;
                grown_bbox(&prev, w, h, shift).map(|b| {
                    let pixels = b.map(|v| v as f64);
                    NextBox {
                        model: self.box_to_model(pixels),
                        pixels,
                    }
                })
            }
        }
    }
}

/// MedSAM2's input: each channel resized to `side²` by Pillow's bicubic filter, /255, ImageNet
/// mean/std (in `float64` as the 3D script's numpy arrays, then `float32`).
fn imagenet_input(rgb: &[u8], (h, w): (usize, usize), side: usize) -> ModelInput {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    let mut data = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        let plane: Vec<u8> = rgb.iter().skip(c).step_by(3).copied().collect();
        let resized = pil_bicubic_resize_u8(&plane, h, w, side, side);
        data.extend(
            resized
                .iter()
                .map(|&v| ((f64::from(v) / 255.0 - MEAN[c]) / STD[c]) as f32),
        );
    }
    ModelInput {
        data,
        size: side,
        content: (side, side),
    }
}

/// `256 / max(h, w)`: LiteMedSAM's resize factor, and the chain rule's margin scale.
fn longest_side_scale((h, w): (usize, usize)) -> f64 {
    LOW_RES as f64 / h.max(w) as f64
}

/// Bounding box of a mask grown by `shift`, clamped to `w × h` (`get_bbox256`).
fn grown_bbox(mask: &[u8], w: usize, h: usize, shift: usize) -> Option<[usize; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] > 0 {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
    }
    (x0 != usize::MAX).then(|| {
        [
            x0.saturating_sub(shift),
            y0.saturating_sub(shift),
            (x1 + shift).min(w),
            (y1 + shift).min(h),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite_frame_keeps_the_aspect_and_floors_boxes() {
        let f = Frame::new(ModelFamily::LiteMedSam, (300, 600));
        assert_eq!(f.content, (128, 256));
        assert_eq!(
            f.box_to_model([10.0, 20.0, 301.0, 299.0]),
            [4.0, 8.0, 128.0, 127.0]
        );
        assert_eq!(f.point_to_model([3.0, 5.0]), [1.28, 2.1333334]);
    }

    #[test]
    fn medsam_frame_stretches_each_axis() {
        let f = Frame::new(ModelFamily::MedSam, (512, 256));
        assert_eq!(f.content, (1024, 1024));
        assert_eq!(
            f.box_to_model([64.0, 64.0, 128.0, 256.0]),
            [256.0, 128.0, 512.0, 512.0]
        );
    }

    #[test]
    fn sam2_frames_stretch_to_their_side_and_threshold_logits_at_zero() {
        for (family, side) in [
            (ModelFamily::MedSam2, 512.0),
            (ModelFamily::Sam21Tiny, 1024.0),
        ] {
            let f = Frame::new(family, (233, 197));
            assert_eq!(f.content, (side as usize, side as usize));
            // `box / [W, H, W, H] * side` in float32, as the predictors scale it.
            let b = f.box_to_model([60.0, 80.0, 140.0, 150.0]);
            assert_eq!(b[0], 60.0f32 / 197.0 * side);
            assert_eq!(b[3], 150.0f32 / 233.0 * side);
            let low = family.low_res_side();
            let mut logits = vec![-1.0f32; low * low];
            assert!(f.mask(&logits).iter().all(|&m| !m));
            logits.iter_mut().for_each(|v| *v = 1e-3); // barely positive: inside
            assert!(f.mask(&logits).iter().all(|&m| m));
            assert!(
                f.next_box(&[true; 233 * 197], 3).is_none(),
                "memory, not boxes"
            );
            let img = Image::new(197, 233, 1, vec![255; 233 * 197]).unwrap();
            let input = f.input(&img).unwrap();
            // White: (1 − mean) / std per channel.
            let n = input.size * input.size;
            assert!((input.data[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
            assert!((input.data[2 * n] - (1.0 - 0.406) / 0.225).abs() < 1e-5);
        }
    }

    #[test]
    fn input_refuses_an_image_of_another_size() {
        let f = Frame::new(ModelFamily::LiteMedSam, (4, 4));
        let img = Image::new(5, 4, 1, vec![0; 20]).unwrap();
        assert!(matches!(f.input(&img), Err(Error::InvalidImage(_))));
        let img = Image::new(4, 4, 1, (0..16).collect()).unwrap();
        let input = f.input(&img).unwrap();
        assert_eq!((input.size, input.content), (256, (256, 256)));
        assert_eq!(input.data.len(), 3 * 256 * 256);
    }

    #[test]
    fn lite_mask_crops_the_padding_before_upsampling() {
        // Positive logits only in the padding: nothing of it reaches the image.
        let f = Frame::new(ModelFamily::LiteMedSam, (100, 200));
        let (ch, _) = f.content;
        let mut logits = vec![-10.0f32; LOW_RES_LEN];
        logits[ch * LOW_RES..].iter_mut().for_each(|v| *v = 10.0);
        assert!(f.mask(&logits).iter().all(|&m| !m));
        logits[..ch * LOW_RES].iter_mut().for_each(|v| *v = 10.0);
        assert!(f.mask(&logits).iter().all(|&m| m));
    }

    #[test]
    fn next_box_grows_the_previous_mask_by_the_margin() {
        let (h, w) = (512, 512);
        let mut mask = vec![false; h * w];
        for y in 100..200 {
            for x in 50..150 {
                mask[y * w + x] = true;
            }
        }
        // MedSAM: margin 3 at the 256 scale is 6 pixels of a 512 image.
        let m = Frame::new(ModelFamily::MedSam, (h, w));
        let b = m.next_box(&mask, 3).unwrap();
        assert_eq!(b.pixels, [44.0, 94.0, 155.0, 205.0]);
        // LiteMedSAM: the box of the halved mask (25..74, 50..99) grown by 3, back in pixels.
        let l = Frame::new(ModelFamily::LiteMedSam, (h, w));
        let b = l.next_box(&mask, 3).unwrap();
        assert_eq!(b.model, [22.0, 47.0, 77.0, 102.0]);
        assert_eq!(b.pixels, [44.0, 94.0, 154.0, 204.0]);
        assert_eq!(l.next_box(&vec![false; h * w], 3), None);
    }
}
