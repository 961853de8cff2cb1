//! The chain rule: 3D segmentation from one box on a key slice, propagated slice by slice as LiteMedSAM's
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

use super::options::{
    check_options, empty_pass_logits, record_pass, to_u8_checked, EmptySlice, VolumeOptions,
    VolumeSegmentation,
};
use crate::error::Result;
use crate::frame::{Frame, NextBox};
use crate::preprocess::Image;
use crate::segmenter::{Prediction, Segmenter};
use crate::volume::{largest_component, LesionStats, Volume};

/// [`Segmenter::segment_volume`] for MedSAM and LiteMedSAM.
pub(super) fn segment_volume(
    seg: &Segmenter,
    vol: &Volume,
    opts: &VolumeOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<VolumeSegmentation> {
    let (zlo, zhi) = check_options(vol, opts)?;
    let u8vol = to_u8_checked(vol, opts)?;
    let mut run = Propagation {
        seg,
        opts,
        u8vol: &u8vol,
        dims: vol.dims,
        frame: seg.frame((vol.dims[1], vol.dims[2])),
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
    /// box the previous slice's mask gives, until the stop rule ends it (or
    /// `stop_after_empty` empty slices in a row).
    fn direction(&mut self, zs: impl Iterator<Item = usize>, step: i64) -> Result<()> {
        let mut empty_run = 0;
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
            empty_run = if mean.is_some() { 0 } else { empty_run + 1 };
            if self.opts.stop_after_empty.is_some_and(|n| empty_run >= n) {
                break;
            }
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
