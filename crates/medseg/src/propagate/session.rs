//! A 3D session: prompts on any slice for any object, propagation, corrections and
//! re-propagation. MedSAM2 runs SAM 2's video predictor ([`Sam2Tracker`], exact to
//! `sam2==1.1.0`); MedSAM and LiteMedSAM run the chain rule from every prompted slice
//! ([`ChainTracker`]). Coordinates are image pixels of a slice; objects are numbered by the
//! caller (1..=65535, the values of [`VolumeSession::label_map`]).
//!
//! ```no_run
//! # fn main() -> medseg::Result<()> {
//! use medseg::{Direction, SessionOptions, VolumeSession};
//! let seg = medseg::Segmenter::from_file(
//!     medseg::ModelFamily::MedSam2, "MedSAM2_latest.pt", &medseg::cpu())?;
//! let vol = medseg::io::read_volume("dwi.nii.gz")?;
//! let mut s = VolumeSession::new(&seg, &vol, &SessionOptions::default())?;
//! s.add_new_points_or_box(24, 1, &[], Some([60.0, 80.0, 140.0, 150.0]), true)?;
//! s.propagate(Direction::Both, None, None, &mut |_| {})?;
//! s.add_new_points_or_box(30, 1, &[([101.0, 96.0], 0)], None, false)?; // leak: a negative click
//! s.propagate(Direction::Both, None, None, &mut |_| {})?;
//! println!("{:?} mL", s.stats(1)?.volume_ml);
//! # Ok(()) }
//! ```

use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData};

use super::chain_tracker::ChainTracker;
use super::steps::SessionStep;
pub use super::steps::{Direction, MAX_OBJECT_ID};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::model::sam2::HeadsOut;
use crate::model::sam2_video::{feature_bytes, Sam2Tracker};
use crate::preprocess::Image;
use crate::segmenter::Segmenter;
use crate::volume::{to_u8, Intensity, LesionStats, Volume};

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Intensity → 8-bit rule for the whole volume (default by modality).
    pub intensity: Option<Intensity>,
    /// A prompt on an already tracked slice makes it a prompted (conditioning) slice, so the
    /// correction holds through every later propagation: SAM 2's
    /// `add_all_frames_to_correct_as_cond=True` (default here). `false` is upstream's default,
    /// where a correction only refines that slice's mask until propagation passes it again.
    pub corrections_as_conditioning: bool,
    /// Memory for cached image features, in MiB (default 1024: ≈ 200 slices at 512²; each
    /// slice costs [`feature_bytes`]; MedSAM's and LiteMedSAM's embeddings 4 MiB).
    /// Features are computed once per slice while they fit.
    pub feature_cache_mib: usize,
    /// Chain rule (MedSAM, LiteMedSAM): box growth in pixels at the 256 scale (official: 3).
    pub margin: usize,
    /// Chain rule: stop where the mean 8-bit intensity inside the mask differs from the
    /// prompted slice's by more than this many grey levels (`None`: never; default 40).
    pub max_intensity_drift: Option<f64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            intensity: None,
            corrections_as_conditioning: true,
            feature_cache_mib: 1024,
            margin: 3,
            max_intensity_drift: Some(40.0),
        }
    }
}

/// One object's result on one slice.
#[derive(Debug, Clone)]
pub struct SlicePrediction {
    /// The mask at the slice's size, `H × W`.
    pub mask: Vec<bool>,
    /// Low-res logits in the model frame (`128 × 128` for MedSAM2).
    pub low_res_logits: Vec<f32>,
    /// MedSAM2: the object score (> 0: the object is on the slice); `None` for the chain
    /// rule's families.
    pub object_score: Option<f32>,
}

/// What propagates: SAM 2's memory or the chain rule.
#[derive(Debug, Clone)]
enum Engine {
    Memory(Box<Sam2Tracker>),
    Chain(Box<ChainTracker>),
}

/// A volume, a model and the prompts of any number of objects.
#[derive(Debug, Clone)]
pub struct VolumeSession {
    engine: Engine,
    frame: Frame,
    vol: Volume,
    u8vol: Vec<u8>,
}

impl VolumeSession {
    /// A session on `vol` with `seg`. Nothing runs until the first prompt.
    pub fn new(seg: &Segmenter, vol: &Volume, opts: &SessionOptions) -> Result<Self> {
        let [nz, ny, nx] = vol.dims;
        let frame = seg.frame((ny, nx));
        let engine = match seg.sam2() {
            Some(model) => {
                let cache = (opts.feature_cache_mib << 20) / feature_bytes(model.image_size);
                let mut t = Sam2Tracker::new(model.clone(), nz, cache.min(nz));
                t.corrections_as_conditioning = opts.corrections_as_conditioning;
                Engine::Memory(Box::new(t))
            }
            None => {
                let cache = (opts.feature_cache_mib << 20) / (4 * 256 * 64 * 64);
                let mut t = ChainTracker::new(seg.clone(), frame, nz, cache.min(nz));
                t.margin = opts.margin;
                t.max_drift = super::options::drift_limit(opts.max_intensity_drift.unwrap_or(0.0))?;
                Engine::Chain(Box::new(t))
            }
        };
        let rule = opts
            .intensity
            .unwrap_or(Intensity::default_for(vol.modality));
        Ok(Self {
            engine,
            frame,
            u8vol: to_u8(&vol.data, rule),
            vol: vol.clone(),
        })
    }

    /// The volume.
    pub fn volume(&self) -> &Volume {
        &self.vol
    }

    /// Object ids, in the order they were first prompted.
    pub fn object_ids(&self) -> Vec<u32> {
        match &self.engine {
            Engine::Memory(t) => t.object_ids(),
            Engine::Chain(t) => t.object_ids(),
        }
    }

    /// SAM 2's `add_new_points_or_box` on `slice` for `object`: clicks `([x, y], label)`
    /// (1 positive, 0 negative) and/or a box `[x0, y0, x1, y1]`, image pixels. On a slice that
    /// already holds a mask, the clicks refine it (the earlier logits go in with them).
    /// `clear_old_points`: replace the slice's earlier prompts (needed with a box, which comes
    /// first) rather than add to them.
    pub fn add_new_points_or_box(
        &mut self,
        slice: usize,
        object: u32,
        points: &[([f64; 2], i64)],
        bbox: Option<[f64; 4]>,
        clear_old_points: bool,
    ) -> Result<SlicePrediction> {
        self.check_prompt(slice, object)?;
        let size = self.frame.original;
        for &(p, l) in points {
            crate::prompt::validate_point(p, l, size)?;
        }
        if let Some(b) = bbox {
            crate::prompt::validate_box(b, size)?;
        }
        let frame = self.frame;
        let (engine, mut image) = self.parts();
        match engine {
            Engine::Memory(t) => {
                let clicks: Vec<([f32; 2], i64)> = points
                    .iter()
                    .map(|&(p, l)| (frame.point_to_model(p), l))
                    .collect();
                let bbox = bbox.map(|b| frame.box_to_model(b));
                let mut input = model_input(&mut image, frame, t.model().device().clone());
                let heads = t.add_points_or_box(
                    &mut input,
                    slice,
                    object,
                    &clicks,
                    bbox,
                    clear_old_points,
                )?;
                Ok(prediction(&frame, &heads.low_res, Some(heads.object_score)))
            }
            Engine::Chain(t) => {
                let out =
                    t.add_points_or_box(&mut image, slice, object, points, bbox, clear_old_points)?;
                Ok(prediction(&frame, &out.low_res, None))
            }
        }
    }

    /// SAM 2's `add_new_mask` (MedSAM2 only): `mask` (`H × W`, the slice's size) is the
    /// object on `slice`.
    pub fn add_new_mask(
        &mut self,
        slice: usize,
        object: u32,
        mask: &[bool],
    ) -> Result<SlicePrediction> {
        self.check_prompt(slice, object)?;
        let m = self.frame.mask_to_model(mask)?;
        let frame = self.frame;
        let (engine, mut image) = self.parts();
        let Engine::Memory(t) = engine else {
            return Err(Error::InvalidPrompt("mask prompts need MedSAM2".into()));
        };
        let mut input = model_input(&mut image, frame, t.model().device().clone());
        let heads = t.add_mask(&mut input, slice, object, m)?;
        Ok(prediction(&frame, &heads.low_res, Some(heads.object_score)))
    }

    /// SAM 2's `clear_all_prompts_in_frame`: the object's prompts on `slice` go; its mask
    /// there stays until propagation passes the slice again.
    pub fn clear_all_prompts_in_slice(&mut self, slice: usize, object: u32) -> Result<()> {
        match &mut self.engine {
            Engine::Memory(t) => t.clear_prompts(slice, object),
            Engine::Chain(t) => t.clear_prompts(slice, object),
        }
    }

    /// SAM 2's `remove_object`.
    pub fn remove_object(&mut self, object: u32) -> Result<()> {
        match &mut self.engine {
            Engine::Memory(t) => t.remove_object(object),
            Engine::Chain(t) => t.remove_object(object),
        }
    }

    /// SAM 2's `reset_state`: every object and prompt goes; cached features stay.
    pub fn reset_state(&mut self) {
        match &mut self.engine {
            Engine::Memory(t) => t.reset(),
            Engine::Chain(t) => t.reset(),
        }
    }

    /// Propagate from `start` over at most `max_slices` slices (default: all) in
    /// `direction` (`Both`: forward, then backward from the same start). MedSAM2: SAM 2's
    /// `propagate_in_video` (default start: the earliest prompted slice of any object;
    /// prompted slices keep their masks, every other visited slice is tracked again). Chain
    /// rule: inside the range (default: the whole volume) every mask not prompted is made
    /// again from the prompted slices outward ([`ChainTracker`]). `progress(slice)` after
    /// each slice. Returns the slices visited, in order.
    pub fn propagate(
        &mut self,
        direction: Direction,
        start: Option<usize>,
        max_slices: Option<usize>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<usize>> {
        let nz = self.vol.dims[0];
        if let Some(s) = start.filter(|&s| s >= nz) {
            return Err(Error::InvalidPrompt(format!(
                "start slice {s} outside the volume's {nz} slices"
            )));
        }
        let frame = self.frame;
        let (engine, mut image) = self.parts();
        match engine {
            Engine::Memory(t) => {
                let mut input = model_input(&mut image, frame, t.model().device().clone());
                let passes: &[bool] = match direction {
                    Direction::Forward => &[false],
                    Direction::Backward => &[true],
                    Direction::Both => &[false, true],
                };
                let mut visited = Vec::new();
                for &reverse in passes {
                    let mut visit = |z: usize, _: &[(u32, &HeadsOut)]| {
                        progress(z);
                        Ok(ControlFlow::Continue(()))
                    };
                    visited
                        .extend(t.propagate(&mut input, reverse, start, max_slices, &mut visit)?);
                }
                Ok(visited)
            }
            Engine::Chain(t) => {
                let range = chain_range(direction, start, max_slices, nz);
                let ways = (
                    direction != Direction::Backward,
                    direction != Direction::Forward,
                );
                t.propagate(&mut image, range, ways, progress)
            }
        }
    }

    /// Apply one entry of a session script ([`super::steps`]); `read_mask(path)` gives a mask
    /// entry's `H × W` mask (the front-end reads files). A propagation returns the slices it
    /// visited.
    pub fn apply(
        &mut self,
        step: &SessionStep,
        read_mask: &mut dyn FnMut(&str) -> Result<Vec<bool>>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Option<Vec<usize>>> {
        match step {
            SessionStep::Prompt {
                slice,
                object,
                bbox,
                points,
                clear,
            } => {
                self.add_new_points_or_box(*slice, *object, points, *bbox, *clear)?;
            }
            SessionStep::Mask {
                slice,
                object,
                path,
            } => {
                let mask = read_mask(path)?;
                self.add_new_mask(*slice, *object, &mask)?;
            }
            SessionStep::Propagate {
                direction,
                start,
                max,
            } => {
                return self.propagate(*direction, *start, *max, progress).map(Some);
            }
            SessionStep::ClearSlice { slice, object } => {
                self.clear_all_prompts_in_slice(*slice, *object)?
            }
            SessionStep::RemoveObject { object } => self.remove_object(*object)?,
        }
        Ok(None)
    }

    /// The object's low-res logits on `slice` and (MedSAM2) its object score.
    fn result(&self, object: u32, slice: usize) -> Option<(&[f32], Option<f32>)> {
        match &self.engine {
            Engine::Memory(t) => t
                .output(object, slice)
                .map(|h| (&h.low_res[..], Some(h.object_score))),
            Engine::Chain(t) => t.output(object, slice).map(|o| (&o.low_res[..], None)),
        }
    }

    /// The object's current result on `slice` (`None`: no prompt or propagation reached it).
    pub fn slice_prediction(&self, object: u32, slice: usize) -> Option<SlicePrediction> {
        let (low_res, score) = self.result(object, slice)?;
        Some(prediction(&self.frame, low_res, score))
    }

    /// Slices holding a result for `object`.
    pub fn slices_with_result(&self, object: u32) -> Vec<usize> {
        match &self.engine {
            Engine::Memory(t) => t.frames_with_output(object),
            Engine::Chain(t) => t.frames_with_output(object),
        }
    }

    /// The object's 3D mask (`Z × H × W`): each slice's current result.
    pub fn object_mask(&self, object: u32) -> Result<Vec<bool>> {
        self.known(object)?;
        let n = self.vol.slice_len();
        let mut mask = vec![false; self.vol.data.len()];
        for z in self.slices_with_result(object) {
            let (low_res, _) = self.result(object, z).expect("listed");
            mask[z * n..(z + 1) * n].copy_from_slice(&self.frame.mask(low_res));
        }
        Ok(mask)
    }

    /// Lesion statistics (mL, slice range, ...) of the object's 3D mask.
    pub fn stats(&self, object: u32) -> Result<LesionStats> {
        Ok(LesionStats::compute(&self.object_mask(object)?, &self.vol))
    }

    /// All objects as one label volume (`Z × H × W`): each voxel the id of the object with
    /// the highest logit there among those whose mask holds it, else 0.
    pub fn label_map(&self) -> Vec<u16> {
        (0..self.vol.dims[0])
            .flat_map(|z| self.label_slice(z))
            .collect()
    }

    /// Slice `z` of [`VolumeSession::label_map`] (`H × W`), made from that slice's results
    /// alone (what a viewer shows per slice).
    pub fn label_slice(&self, z: usize) -> Vec<u16> {
        let n = self.vol.slice_len();
        let mut labels = vec![0u16; n];
        let mut best = vec![f32::NEG_INFINITY; n];
        for id in self.object_ids() {
            let Some((low_res, _)) = self.result(id, z) else {
                continue;
            };
            let inside = self.frame.mask(low_res);
            let logits = self.frame.logits_at_image(low_res);
            for (i, (m, v)) in inside.into_iter().zip(logits).enumerate() {
                if m && v > best[i] {
                    labels[i] = id as u16;
                    best[i] = v;
                }
            }
        }
        labels
    }

    fn known(&self, object: u32) -> Result<()> {
        if self.object_ids().contains(&object) {
            Ok(())
        } else {
            Err(Error::InvalidPrompt(format!(
                "no object {object} (objects: {:?})",
                self.object_ids()
            )))
        }
    }

    /// The slice and object of a prompt: inside the volume, an id in 1..=65535, a slice
    /// the intensity rule does not flatten.
    fn check_prompt(&self, slice: usize, object: u32) -> Result<()> {
        let nz = self.vol.dims[0];
        if slice >= nz {
            return Err(Error::InvalidPrompt(format!(
                "slice {slice} outside the volume's {nz} slices"
            )));
        }
        if object == 0 || object > MAX_OBJECT_ID {
            return Err(Error::InvalidPrompt(format!(
                "object id {object}: expected 1..={MAX_OBJECT_ID} (0 is the background)"
            )));
        }
        let what = format!("the window maps the whole slice {slice}");
        super::options::check_not_flat(&self.u8vol, &self.vol, slice, &what)
    }

    /// The engine and a source of 8-bit slices.
    fn parts(&mut self) -> (&mut Engine, impl FnMut(usize) -> Result<Image> + '_) {
        let u8vol = &self.u8vol;
        let [_, ny, nx] = self.vol.dims;
        let image = move |z: usize| -> Result<Image> {
            let n = ny * nx;
            Image::new(nx, ny, 1, u8vol[z * n..(z + 1) * n].to_vec())
        };
        (&mut self.engine, image)
    }
}

/// Model inputs (`[1, 3, S, S]`) from 8-bit slices, through `frame`.
fn model_input<'a>(
    image: &'a mut (impl FnMut(usize) -> Result<Image> + 'a),
    frame: Frame,
    device: burn::tensor::Device,
) -> impl FnMut(usize) -> Result<Tensor<4>> + 'a {
    move |z| {
        let x = frame.input(&image(z)?)?;
        Ok(Tensor::from_data(
            TensorData::new(x.data, [1, 3, x.size, x.size]),
            &device,
        ))
    }
}

/// The chain rule's slice range for a propagation from `start` over `max` slices.
fn chain_range(
    direction: Direction,
    start: Option<usize>,
    max: Option<usize>,
    nz: usize,
) -> (usize, usize) {
    let Some(s) = start else {
        return (0, nz - 1);
    };
    let m = max.unwrap_or(nz);
    let lo = if direction == Direction::Forward {
        s
    } else {
        s.saturating_sub(m)
    };
    let hi = if direction == Direction::Backward {
        s
    } else {
        (s + m).min(nz - 1)
    };
    (lo, hi)
}

/// Low-res logits as a [`SlicePrediction`] at the slice's size.
fn prediction(frame: &Frame, low_res: &[f32], object_score: Option<f32>) -> SlicePrediction {
    SlicePrediction {
        mask: frame.mask(low_res),
        low_res_logits: low_res.to_vec(),
        object_score,
    }
}
