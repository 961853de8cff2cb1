//! 3D segmentation from one box on a key slice, propagated slice by slice as LiteMedSAM's
//! official 3D script (`CVPR24_LiteMedSAM_infer.py`, `MedSAM_infer_npz_3D`) does: the key
//! slice uses the user's box; each next slice (up, then down) uses the bounding box of the
//! previous slice's mask, grown by 3 pixels at the 256 scale.
//!
//! **Stop rule.** The official script runs over a fixed z-range and, when the previous mask
//! is empty, falls back to the key box. medseg needs no z-range by default: propagation in a
//! direction stops at the first slice whose mask is empty ([`EmptySlice::Stop`]) or whose mean
//! 8-bit intensity differs from the key-slice mask's by more than `max_intensity_drift`
//! (default 40 grey levels): past a lesion's end the model, still given a box, segments
//! whatever lies there, and that tissue does not look like the lesion (a DWI-bright infarct
//! next to normal white matter). That slice is not kept. [`EmptySlice::KeyBoxFallback`] with
//! `max_intensity_drift: None` and a `z_range` reproduces the official behaviour.
//!
//! Memory: only the output mask and one slice's embedding are held, whatever the slice count.

use crate::error::{Error, Result};
use crate::model::{ModelFamily, PromptBatch};
use crate::preprocess::{resize_area_u8, Image};
use crate::segmenter::Segmenter;
use crate::volume::{largest_component, to_u8, value_range, Intensity, LesionStats, Volume};

/// What to do when a slice's mask comes back empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptySlice {
    /// Stop propagating in that direction (default).
    #[default]
    Stop,
    /// Use the key-slice box on the next slice (the official script's behaviour).
    KeyBoxFallback,
}

/// Options of [`Segmenter::segment_volume`].
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// Slice holding the box.
    pub key_slice: usize,
    /// Box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub bbox: [f64; 4],
    /// Slices to cover, inclusive (default: the whole volume).
    pub z_range: Option<(usize, usize)>,
    /// Intensity → 8-bit rule, applied to the whole volume (default by modality).
    pub intensity: Option<Intensity>,
    pub on_empty: EmptySlice,
    /// Box growth in pixels at the 256 scale (official: 3).
    pub margin: usize,
    /// Keep only the largest 3D connected component (6-connectivity).
    pub largest_component: bool,
    /// Stop when a slice's mean 8-bit intensity inside the mask differs from the key
    /// slice's by more than this many grey levels (`None`: never).
    pub max_intensity_drift: Option<f64>,
}

impl VolumeOptions {
    pub fn new(key_slice: usize, bbox: [f64; 4]) -> Self {
        Self {
            key_slice,
            bbox,
            z_range: None,
            intensity: None,
            on_empty: EmptySlice::Stop,
            margin: 3,
            largest_component: false,
            max_intensity_drift: Some(40.0),
        }
    }
}

/// A 3D result.
#[derive(Debug, Clone)]
pub struct VolumeSegmentation {
    /// `nz × ny × nx`, true inside.
    pub mask: Vec<bool>,
    pub stats: LesionStats,
    /// Slices the model ran on, in order.
    pub slices_run: Vec<usize>,
    /// The box used on each slice it ran on (image pixels), for overlays.
    pub boxes: Vec<(usize, [f64; 4])>,
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

/// The drift limit from a user's number of grey levels: 0 disables the rule; a negative or
/// non-finite value is refused (the CLI's `--max-drift`, Python's `max_drift`).
pub fn drift_limit(grey_levels: f64) -> Result<Option<f64>> {
    if grey_levels.is_finite() && grey_levels >= 0.0 {
        Ok((grey_levels > 0.0).then_some(grey_levels))
    } else {
        Err(Error::InvalidOption(format!(
            "max drift {grey_levels}: a number of grey levels >= 0 (0 disables)"
        )))
    }
}

/// The key slice, box, z range and drift limit of `opts` for `vol`; the z range to cover.
fn check_options(vol: &Volume, opts: &VolumeOptions) -> Result<(usize, usize)> {
    let [nz, ny, nx] = vol.dims;
    if opts.key_slice >= nz {
        return Err(Error::InvalidPrompt(format!(
            "key slice {} outside the volume's {nz} slices",
            opts.key_slice
        )));
    }
    Segmenter::validate_box(opts.bbox, (ny, nx))?;
    let (zlo, zhi) = opts.z_range.unwrap_or((0, nz - 1));
    if zlo > opts.key_slice || zhi < opts.key_slice || zhi >= nz {
        return Err(Error::InvalidPrompt(format!(
            "z range {zlo}-{zhi} must hold the key slice {} and lie inside 0-{}",
            opts.key_slice,
            nz - 1
        )));
    }
    if let Some(d) = opts.max_intensity_drift {
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::InvalidOption(format!(
                "max intensity drift {d}: a positive number of grey levels (or none)"
            )));
        }
    }
    Ok((zlo, zhi))
}

/// The volume in 8 bits by `opts`' rule (default by modality), refused when the key slice
/// comes out as one flat grey level: a window far outside the data (or absurdly wide) leaves
/// the model nothing to see, and it would outline the whole box on every slice.
fn to_u8_checked(vol: &Volume, opts: &VolumeOptions) -> Result<Vec<u8>> {
    let rule = opts
        .intensity
        .unwrap_or(Intensity::default_for(vol.modality));
    let u8vol = to_u8(&vol.data, rule);
    let n = vol.slice_len();
    let key = &u8vol[opts.key_slice * n..(opts.key_slice + 1) * n];
    if key.iter().all(|&v| v == key[0]) {
        let (lo, hi) = value_range(vol.slice(opts.key_slice));
        return Err(Error::InvalidWindow(format!(
            "{rule} maps the whole key slice {} (values {lo}..{hi}) to grey level {}: nothing \
             is left to segment; choose a window inside the data",
            opts.key_slice, key[0]
        )));
    }
    Ok(u8vol)
}

impl Segmenter {
    /// Segment a 3D structure from one box on a key slice (see the module docs).
    /// `progress(done, total)` is called after each slice.
    pub fn segment_volume(
        &self,
        vol: &Volume,
        opts: &VolumeOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<VolumeSegmentation> {
        let [nz, ny, nx] = vol.dims;
        let (zlo, zhi) = check_options(vol, opts)?;
        let u8vol = to_u8_checked(vol, opts)?;
        let n = ny * nx;
        let mut mask = vec![false; nz * n];
        let total = zhi - zlo + 1;
        let mut slices_run = Vec::new();
        let mut boxes = Vec::new();
        let family = self.family();
        let s = 256.0 / ny.max(nx) as f64;
        let (nh, nw) = (
            (ny as f64 * s + 0.5) as usize,
            (nx as f64 * s + 0.5) as usize,
        );

        let mean_inside = |m: &[bool], px: &[u8]| {
            let (s, c) = m
                .iter()
                .zip(px)
                .filter(|(inside, _)| **inside)
                .fold((0.0, 0usize), |(s, c), (_, &v)| (s + v as f64, c + 1));
            (c > 0).then(|| s / c as f64)
        };
        let mut key_mean = None;
        let up: Vec<usize> = (opts.key_slice..=zhi).collect();
        let down: Vec<usize> = (zlo..opts.key_slice).rev().collect();
        for (dir, zs) in [(1i64, up), (-1i64, down)] {
            for z in zs {
                let image = Image::new(nx, ny, 1, u8vol[z * n..(z + 1) * n].to_vec())?;
                let prev = (z as i64 - dir) as usize;
                let prev_mask: Option<Vec<u8>> = (z != opts.key_slice).then(|| {
                    mask[prev * n..(prev + 1) * n]
                        .iter()
                        .map(|&m| u8::from(m))
                        .collect()
                });
                // Box in the model frame, and in pixels for the record.
                let (model_box, pixel_box) = match &prev_mask {
                    None => (self.box_to_model(opts.bbox, (ny, nx)), opts.bbox),
                    Some(pm) => {
                        let grown = match family {
                            ModelFamily::LiteMedSam => {
                                let small = resize_area_u8(pm, ny, nx, 1, nh.max(1), nw.max(1));
                                let mut padded = vec![0u8; 256 * 256];
                                for y in 0..nh.max(1) {
                                    let w = nw.max(1);
                                    padded[y * 256..y * 256 + w]
                                        .copy_from_slice(&small[y * w..(y + 1) * w]);
                                }
                                grown_bbox(&padded, 256, 256, opts.margin).map(|b| {
                                    let mb = b.map(|v| v as f32);
                                    (mb, b.map(|v| v as f64 / s))
                                })
                            }
                            ModelFamily::MedSam => {
                                let shift = (opts.margin as f64 / s).round() as usize;
                                grown_bbox(pm, nx, ny, shift).map(|b| {
                                    let pb = b.map(|v| v as f64);
                                    (self.box_to_model(pb, (ny, nx)), pb)
                                })
                            }
                        };
                        match (grown, opts.on_empty) {
                            (Some(g), _) => g,
                            (None, EmptySlice::KeyBoxFallback) => {
                                (self.box_to_model(opts.bbox, (ny, nx)), opts.bbox)
                            }
                            (None, EmptySlice::Stop) => break,
                        }
                    }
                };
                let emb = self.embed(&image)?;
                let batch = PromptBatch {
                    boxes: Some(vec![model_box]),
                    ..Default::default()
                };
                let pred = self.decode_batch(&emb, &batch, 1, false)?;
                let m = pred.mask(0, 0);
                let mean = mean_inside(m, &image.data);
                if z == opts.key_slice {
                    key_mean = mean;
                } else if let (Some(limit), Some(k), Some(v)) =
                    (opts.max_intensity_drift, key_mean, mean)
                {
                    if (v - k).abs() > limit {
                        break;
                    }
                }
                mask[z * n..(z + 1) * n].copy_from_slice(m);
                slices_run.push(z);
                boxes.push((z, pixel_box));
                progress(slices_run.len(), total);
            }
        }
        if opts.largest_component {
            largest_component(&mut mask, vol.dims);
        }
        let stats = LesionStats::compute(&mask, vol);
        Ok(VolumeSegmentation {
            mask,
            stats,
            slices_run,
            boxes,
        })
    }
}
