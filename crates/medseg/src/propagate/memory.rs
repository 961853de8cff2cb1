//! 3D segmentation from one box on a key slice by SAM 2's memory, as MedSAM2's 3D script
//! (`medsam2_infer_3D_CT.py`) runs the official video predictor: the box on the key slice,
//! propagate towards higher slice indices; reset; the same box, propagate towards lower ones.
//! It runs on the same video predictor as the interactive session ([`Sam2Tracker`], see
//! [`super::session`]). Each tracked slice attends to the key slice's memory, the memories of
//! the 6 slices just behind it and up to 15 object pointers ([`crate::model::memory_bank`]);
//! nothing else is held, so memory does not grow with the slice count.
//!
//! What the official predictor does and this does too: the key slice's mask is decided by the
//! single-mask output unless it is unstable (then the best multimask one), tracked slices take
//! the multimask output with the highest predicted IoU, the key slice's memory is made from
//! its binarised mask, other memories from the sigmoid of the logits, memories are stored in
//! bfloat16. What it does not do: `fill_holes_in_mask_scores` (hole filling up to 8 pixels in
//! the low-res logits) needs SAM 2's CUDA extension; on the CPU the official code skips it
//! with a warning, and so does medseg.

use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData};

use super::options::{
    check_options, empty_pass_logits, record_pass, to_u8_checked, VolumeOptions, VolumeSegmentation,
};
use crate::error::Result;
use crate::frame::Frame;
use crate::model::sam2::{HeadsOut, Sam2};
/// SAM 2's prompt packing (kept here under their earlier path).
pub use crate::model::sam2_prompts::{box_points, no_points};
use crate::model::sam2_video::Sam2Tracker;
use crate::preprocess::Image;
use crate::segmenter::Prediction;
use crate::volume::{largest_component_with, Connectivity, LesionStats, Volume};

/// [`crate::Segmenter::segment_volume`] for MedSAM2: the volume (or `z_range`) in 8 bits by
/// the options' rule, both passes over it, the union of `logits > 0` at the input resolution,
/// the largest 3D connected component, 26-connected (as the script always keeps, by
/// `skimage.measure.label`); a pass ends early after `stop_after_empty` empty slices in a
/// row. The chain rule's options
/// (`on_empty`, `margin`, `max_intensity_drift`) do not apply; `progress(done, total)` counts
/// slice visits (the key slice twice).
pub(super) fn segment_volume(
    model: &Sam2,
    frame: Frame,
    vol: &Volume,
    opts: &VolumeOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<VolumeSegmentation> {
    let (zlo, zhi) = check_options(vol, opts)?;
    let u8vol = to_u8_checked(vol, opts)?;
    let [_, ny, nx] = vol.dims;
    let n = ny * nx;
    let device = model.device();
    let input = |s: usize| -> Result<Tensor<4>> {
        let z = zlo + s;
        let image = Image::new(nx, ny, 1, u8vol[z * n..(z + 1) * n].to_vec())?;
        let x = frame.input(&image)?;
        Ok(Tensor::from_data(
            TensorData::new(x.data, [1, 3, x.size, x.size]),
            device,
        ))
    };
    let (frames, key) = (zhi - zlo + 1, opts.key_slice - zlo);
    let mut mask = vec![false; vol.data.len()];
    let mut slices_run = Vec::new();
    let mut key_prediction = None;
    let mut pass_logits = empty_pass_logits(opts, vol.dims);
    let mut visits = 0;
    let bbox = frame.box_to_model(opts.bbox);
    let mut gone = EmptyRun::new(opts.stop_after_empty);
    two_passes(model, frames, key, bbox, input, |pass, s, heads| {
        let z = zlo + s;
        if pass_logits.is_some() {
            let logits = frame.logits_at_image(&heads.low_res);
            record_pass(&mut pass_logits, pass, z, vol.dims, logits);
        }
        let m = frame.mask(&heads.low_res);
        let empty = !m.contains(&true);
        for (o, &v) in mask[z * n..(z + 1) * n].iter_mut().zip(&m) {
            *o |= v;
        }
        if pass == 0 && s == key {
            key_prediction = Some(key_result(&frame, heads, m));
        }
        if !(pass == 1 && s == key) {
            slices_run.push(z);
        }
        visits += 1;
        progress(visits, frames + usize::from(key > 0));
        Ok(gone.after(pass, empty))
    })?;
    largest_component_with(&mut mask, vol.dims, Connectivity::Full);
    let stats = LesionStats::compute(&mask, vol);
    Ok(VolumeSegmentation {
        mask,
        stats,
        slices_run,
        boxes: vec![(opts.key_slice, opts.bbox)],
        key_prediction: key_prediction
            .ok_or_else(|| crate::Error::Backend("the key slice was not visited".into()))?,
        pass_logits,
    })
}

/// [`VolumeOptions::stop_after_empty`]: the empty slices in a row in the current pass.
struct EmptyRun {
    limit: Option<usize>,
    pass: usize,
    run: usize,
}

impl EmptyRun {
    fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            pass: 0,
            run: 0,
        }
    }

    /// After a slice of `pass` whose mask is `empty` or not: go on, or end the pass.
    fn after(&mut self, pass: usize, empty: bool) -> ControlFlow<()> {
        if pass != self.pass {
            (self.pass, self.run) = (pass, 0);
        }
        self.run = if empty { self.run + 1 } else { 0 };
        match self.limit {
            Some(n) if self.run >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The key slice's result as a [`Prediction`] (one mask, its low-res logits and IoU).
fn key_result(frame: &Frame, heads: &HeadsOut, mask: Vec<bool>) -> Prediction {
    Prediction {
        batch: 1,
        masks_per_prompt: 1,
        size: frame.original,
        masks: mask,
        low_res_logits: heads.low_res.clone(),
        low_res: frame.family.low_res_side(),
        iou_predictions: heads.iou.clone(),
    }
}

/// The two passes of MedSAM2's 3D script over `num_frames` slices with the box
/// `[x0, y0, x1, y1]` (model frame, `S`-pixel scale) on `key`, on SAM 2's video predictor
/// ([`Sam2Tracker`]). `input(z)` gives slice `z`'s normalised `[1, 3, S, S]` model input;
/// `visit(pass, z, heads)` receives every slice's result in order (pass 0: `key..num_frames`,
/// pass 1: `key` down to 0; the key slice is visited in both) and may end its pass there.
pub fn two_passes(
    model: &Sam2,
    num_frames: usize,
    key: usize,
    bbox: [f32; 4],
    mut input: impl FnMut(usize) -> Result<Tensor<4>>,
    mut visit: impl FnMut(usize, usize, &HeadsOut) -> Result<ControlFlow<()>>,
) -> Result<()> {
    // No slice but the key is seen twice, so only the key's features are worth keeping.
    let mut tracker = Sam2Tracker::new(model.clone(), num_frames, 1);
    tracker.single_pass = true;
    tracker.add_points_or_box(&mut input, key, 1, &[], Some(bbox), true)?;
    for (pass, reverse) in [(0, false), (1, true)] {
        // The script resets and adds the same box again: the box's output does not depend on
        // tracking, so forgetting the tracked slices is the same and saves running it again.
        tracker.clear_tracking();
        let mut each = |z: usize, outs: &[(u32, &HeadsOut)]| visit(pass, z, outs[0].1);
        if reverse && key == 0 {
            // Upstream skips reverse tracking from slice 0 (the key is then visited once).
            continue;
        }
        tracker.propagate(&mut input, reverse, Some(key), None, &mut each)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_runs_end_a_pass_and_restart_with_the_next() {
        let run = |limit, slices: &[(usize, bool)]| {
            let mut e = EmptyRun::new(limit);
            let flow = slices
                .iter()
                .map(|&(p, empty)| e.after(p, empty).is_break());
            flow.collect::<Vec<bool>>()
        };
        let pass0 = [(0, false), (0, true), (0, false), (0, true), (0, true)];
        assert_eq!(run(Some(2), &pass0), [false, false, false, false, true]);
        assert_eq!(run(Some(1), &pass0[..2]), [false, true]);
        assert_eq!(run(None, &pass0), [false; 5]);
        // the count starts again with the next pass
        let both = [(0, true), (1, true), (1, true)];
        assert_eq!(run(Some(2), &both), [false, false, true]);
    }
}
