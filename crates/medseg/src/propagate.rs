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
use crate::frame::{Frame, NextBox};
use crate::preprocess::Image;
use crate::segmenter::{Prediction, Segmenter};
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
    /// What an empty mask does to the propagation.
    pub on_empty: EmptySlice,
    /// Box growth in pixels at the 256 scale (official: 3).
    pub margin: usize,
    /// Keep only the largest 3D connected component (6-connectivity).
    pub largest_component: bool,
    /// Stop when a slice's mean 8-bit intensity inside the mask differs from the key
    /// slice's by more than this many grey levels (`None`: never).
    pub max_intensity_drift: Option<f64>,
    /// Keep every visited slice's logits at the input resolution
    /// ([`VolumeSegmentation::pass_logits`]); `2 × Z × H × W` floats.
    pub keep_pass_logits: bool,
}

impl VolumeOptions {
    /// Defaults (see the fields) for a box on `key_slice`.
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
            keep_pass_logits: false,
        }
    }
}

/// A 3D result.
#[derive(Debug, Clone)]
pub struct VolumeSegmentation {
    /// `nz × ny × nx`, true inside.
    pub mask: Vec<bool>,
    /// Volume in mL, slice range, area, extent.
    pub stats: LesionStats,
    /// Slices the model ran on, in order.
    pub slices_run: Vec<usize>,
    /// The box used on each slice it ran on (image pixels), for overlays.
    pub boxes: Vec<(usize, [f64; 4])>,
    /// The key slice's prediction (its low-res logits, predicted IoU and mask).
    pub key_prediction: Prediction,
    /// With [`VolumeOptions::keep_pass_logits`]: `[2, Z, H, W]` mask logits at the input
    /// resolution, pass 0 the key slice and the slices above it (MedSAM2: its forward pass),
    /// pass 1 the key slice and those below (its backward pass); NaN where a pass did not run
    /// (or ran and stopped: a slice past the drift limit is not part of the result).
    pub pass_logits: Option<Vec<f32>>,
}

/// `[2, Z, H, W]` NaN planes for [`VolumeSegmentation::pass_logits`], when asked for.
pub(crate) fn empty_pass_logits(opts: &VolumeOptions, dims: [usize; 3]) -> Option<Vec<f32>> {
    opts.keep_pass_logits
        .then(|| vec![f32::NAN; 2 * dims.iter().product::<usize>()])
}

/// Write slice `z`'s logits at the input resolution into pass `pass` of `all`.
pub(crate) fn record_pass(
    all: &mut Option<Vec<f32>>,
    pass: usize,
    z: usize,
    dims: [usize; 3],
    logits: Vec<f32>,
) {
    if let Some(all) = all {
        let n = dims[1] * dims[2];
        let at = (pass * dims[0] + z) * n;
        all[at..at + n].copy_from_slice(&logits);
    }
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
pub(crate) fn check_options(vol: &Volume, opts: &VolumeOptions) -> Result<(usize, usize)> {
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
pub(crate) fn to_u8_checked(vol: &Volume, opts: &VolumeOptions) -> Result<Vec<u8>> {
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
    /// Segment a 3D structure from one box on a key slice: the chain rule above for MedSAM
    /// and LiteMedSAM, SAM 2's memory for MedSAM2 ([`crate::propagate_memory`]).
    /// `progress(done, total)` is called after each slice.
    pub fn segment_volume(
        &self,
        vol: &Volume,
        opts: &VolumeOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<VolumeSegmentation> {
        if let Some(model) = self.sam2() {
            let frame = self.frame((vol.dims[1], vol.dims[2]));
            return crate::propagate_memory::segment_volume(model, frame, vol, opts, progress);
        }
        let (zlo, zhi) = check_options(vol, opts)?;
        let u8vol = to_u8_checked(vol, opts)?;
        let mut run = Propagation {
            seg: self,
            opts,
            u8vol: &u8vol,
            dims: vol.dims,
            frame: self.frame((vol.dims[1], vol.dims[2])),
            mask: vec![false; vol.data.len()],
            slices_run: Vec::new(),
            boxes: Vec::new(),
            key_mean: None,
            total: zhi - zlo + 1,
            progress,
            pass_logits: empty_pass_logits(opts, vol.dims),
        };
        let key_prediction = run.key_slice()?;
        run.direction(opts.key_slice + 1..=zhi, 1)?;
        run.direction((zlo..opts.key_slice).rev(), -1)?;
        let Propagation {
            mut mask,
            slices_run,
            boxes,
            pass_logits,
            ..
        } = run;
        if opts.largest_component {
            largest_component(&mut mask, vol.dims);
        }
        let stats = LesionStats::compute(&mask, vol);
        Ok(VolumeSegmentation {
            mask,
            stats,
            slices_run,
            boxes,
            key_prediction,
            pass_logits,
        })
    }
}

/// One run of [`Segmenter::segment_volume`]: the mask so far and what was recorded.
struct Propagation<'a> {
    seg: &'a Segmenter,
    opts: &'a VolumeOptions,
    /// The whole volume in 8 bits.
    u8vol: &'a [u8],
    dims: [usize; 3],
    /// Every slice's frame (they share one size).
    frame: Frame,
    mask: Vec<bool>,
    slices_run: Vec<usize>,
    boxes: Vec<(usize, [f64; 4])>,
    /// Mean 8-bit intensity inside the key slice's mask.
    key_mean: Option<f64>,
    total: usize,
    progress: &'a mut dyn FnMut(usize, usize),
    /// `[2, Z, H, W]` logits when kept.
    pass_logits: Option<Vec<f32>>,
}

impl Propagation<'_> {
    /// The key slice with the user's box; its mask is kept whatever it holds.
    fn key_slice(&mut self) -> Result<Prediction> {
        let (z, bbox) = (self.opts.key_slice, self.opts.bbox);
        let (pred, mean) = self.run_slice(z, self.frame.box_to_model(bbox))?;
        self.record(0, z, &pred);
        self.record(1, z, &pred);
        self.key_mean = mean;
        self.keep(z, pred.mask(0, 0), bbox);
        Ok(pred)
    }

    /// Slices `zs` in order away from the key slice (`step` = +1 up, -1 down), each with the
    /// box the previous slice's mask gives, until the stop rule ends it.
    fn direction(&mut self, zs: impl Iterator<Item = usize>, step: i64) -> Result<()> {
        for z in zs {
            let prev = (z as i64 - step) as usize;
            let Some(next) = self.next_box(prev) else {
                break;
            };
            let (pred, mean) = self.run_slice(z, next.model)?;
            if self.drifted(mean) {
                break;
            }
            self.record(usize::from(step < 0), z, &pred);
            self.keep(z, pred.mask(0, 0), next.pixels);
        }
        Ok(())
    }

    /// The chain rule's box from slice `prev`'s mask; for an empty mask, the key box
    /// ([`EmptySlice::KeyBoxFallback`]) or nothing (stop).
    fn next_box(&self, prev: usize) -> Option<NextBox> {
        let n = self.dims[1] * self.dims[2];
        let prev_mask = &self.mask[prev * n..(prev + 1) * n];
        let grown = self.frame.next_box(prev_mask, self.opts.margin);
        match (grown, self.opts.on_empty) {
            (Some(b), _) => Some(b),
            (None, EmptySlice::KeyBoxFallback) => Some(NextBox {
                model: self.frame.box_to_model(self.opts.bbox),
                pixels: self.opts.bbox,
            }),
            (None, EmptySlice::Stop) => None,
        }
    }

    /// Whether a slice's mean intensity inside its mask is past the drift limit.
    fn drifted(&self, mean: Option<f64>) -> bool {
        match (self.opts.max_intensity_drift, self.key_mean, mean) {
            (Some(limit), Some(k), Some(v)) => (v - k).abs() > limit,
            _ => false,
        }
    }

    /// Embed slice `z` and decode one box: the prediction and the mean 8-bit intensity inside
    /// its mask (`None` when empty).
    fn run_slice(&self, z: usize, model_box: [f32; 4]) -> Result<(Prediction, Option<f64>)> {
        let [_, ny, nx] = self.dims;
        let pixels = &self.u8vol[z * ny * nx..(z + 1) * ny * nx];
        let image = Image::new(nx, ny, 1, pixels.to_vec())?;
        let emb = self.seg.embed(&image)?;
        let pred = self.seg.predict_model_box(&emb, model_box)?;
        let (sum, count) = pred
            .mask(0, 0)
            .iter()
            .zip(pixels)
            .filter(|(inside, _)| **inside)
            .fold((0.0, 0usize), |(s, c), (_, &v)| (s + v as f64, c + 1));
        Ok((pred, (count > 0).then(|| sum / count as f64)))
    }

    /// Keep slice `z`'s logits at the input resolution in pass `pass`, when asked for.
    fn record(&mut self, pass: usize, z: usize, pred: &Prediction) {
        if self.pass_logits.is_some() {
            let logits = self.frame.logits_at_image(pred.logits(0, 0));
            record_pass(&mut self.pass_logits, pass, z, self.dims, logits);
        }
    }

    /// Record slice `z`'s mask and box.
    fn keep(&mut self, z: usize, m: &[bool], pixel_box: [f64; 4]) {
        let n = m.len();
        self.mask[z * n..(z + 1) * n].copy_from_slice(m);
        self.slices_run.push(z);
        self.boxes.push((z, pixel_box));
        (self.progress)(self.slices_run.len(), self.total);
    }
}
