//! SAM 2's video predictor (`sam2==1.1.0`, `SAM2VideoPredictor`) over the slices of a volume,
//! in the model frame: prompts (box, clicks, mask) on any slice for any object, propagation
//! forward or backward, re-propagation after corrections. Objects are tracked independently
//! (batch 1 each, as 1.1.0 does). The state is upstream's `inference_state`:
//! per object the prompts, the outputs of prompted ("conditioning") and tracked slices, the
//! temporary outputs of prompts not yet propagated, and which slices were tracked in which
//! direction. Which memories a slice attends to is [`super::memory_bank`]'s.
//!
//! Upstream's details kept: a box comes first on a slice (added only with its old prompts
//! cleared); a prompt on a slice that already holds an output feeds those logits (clamped to
//! ±32) to the decoder with the clicks; one click gives three candidates (the best by predicted
//! IoU), a box or two clicks one (or the best candidate when it is unstable); the memories of
//! prompted slices are encoded from their binarised masks when propagation starts, tracked
//! slices' from the sigmoid; a mask prompt is taken as the output (logits ±10). Not kept:
//! `fill_holes_in_mask_scores` (SAM 2's CUDA extension; on the CPU upstream skips it too).
//! `corrections_as_conditioning` is upstream's `add_all_frames_to_correct_as_cond`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData};

use super::memory_bank::{ObjectOutputs, TrackOutput};
use super::prompt_encoder::Points;
use super::sam2::{FrameFeatures, HeadsOut, Sam2};
use super::sam2_prompts::{box_points, no_points, LOGIT_CLAMP};
use crate::error::{Error, Result};
use crate::objects::Objects;
use crate::slice_cache::SliceCache;

/// Gives slice `z`'s normalised `[1, 3, S, S]` model input.
pub type SliceInput<'a> = dyn FnMut(usize) -> Result<Tensor<4>> + 'a;

/// Receives a propagated slice and each object's `(id, output)` there; `Break` ends the
/// propagation after that slice.
pub type SliceVisit<'a> = dyn FnMut(usize, &[(u32, &HeadsOut)]) -> Result<ControlFlow<()>> + 'a;

/// One object's state (`*_per_obj[obj_idx]` upstream).
#[derive(Debug, Clone)]
struct TrackedObject {
    /// Clicks (and a box as points 2, 3) per prompted slice, model frame.
    points: BTreeMap<usize, Points>,
    outputs: ObjectOutputs,
    /// Outputs of prompts not yet propagated (`temp_output_dict_per_obj`).
    temp: ObjectOutputs,
    /// Tracked slices and whether in reverse (`frames_tracked_per_obj`).
    tracked: BTreeMap<usize, bool>,
}

/// Bytes of one slice's cached features at model input size `s` (the three feature levels
/// and the positional encoding, `f32`).
pub fn feature_bytes(image_size: usize) -> usize {
    let g = image_size / 16;
    4 * (2 * 256 * g * g + 32 * 16 * g * g + 64 * 4 * g * g)
}

/// SAM 2's video predictor state over `num_frames` slices.
#[derive(Debug, Clone)]
pub struct Sam2Tracker {
    model: Sam2,
    num_frames: usize,
    objects: Objects<TrackedObject>,
    cache: SliceCache<FrameFeatures>,
    /// A prompt on a tracked slice makes it a conditioning slice (upstream's
    /// `add_all_frames_to_correct_as_cond`; upstream's default: false).
    pub corrections_as_conditioning: bool,
    /// Forget tracked outputs no later slice of the pass can reach (MedSAM2's 3D script,
    /// which never re-propagates); off for interactive use.
    pub single_pass: bool,
}

impl Sam2Tracker {
    /// A tracker over `num_frames` slices keeping the features of up to `cache_slices`.
    pub fn new(model: Sam2, num_frames: usize, cache_slices: usize) -> Self {
        Self {
            model,
            num_frames,
            objects: Objects::default(),
            cache: SliceCache::new(cache_slices),
            corrections_as_conditioning: false,
            single_pass: false,
        }
    }

    /// The model.
    pub fn model(&self) -> &Sam2 {
        &self.model
    }

    /// Object ids in the order they were first prompted.
    pub fn object_ids(&self) -> Vec<u32> {
        self.objects.ids()
    }

    /// Slice `z`'s image features, from the cache or the encoder.
    fn features(&mut self, z: usize, input: &mut SliceInput) -> Result<FrameFeatures> {
        let model = &self.model;
        self.cache.get_or(z, || Ok(model.encode_image(input(z)?)))
    }

    fn check_frame(&self, frame: usize) -> Result<()> {
        if frame < self.num_frames {
            Ok(())
        } else {
            Err(Error::InvalidPrompt(format!(
                "slice {frame} outside the volume's {} slices",
                self.num_frames
            )))
        }
    }

    fn object_index(&mut self, id: u32) -> usize {
        self.objects.position_or_insert(id, || TrackedObject {
            points: BTreeMap::new(),
            outputs: ObjectOutputs::default(),
            temp: ObjectOutputs::default(),
            tracked: BTreeMap::new(),
        })
    }

    /// `add_new_points_or_box`: clicks (`labels` 1 positive, 0 negative) and/or a box in the
    /// model frame on `frame` for object `id`. With `clear_old_points` false the clicks join
    /// the slice's earlier ones; a box needs them cleared (it must come first). Returns the
    /// object's new output on the slice.
    pub fn add_points_or_box(
        &mut self,
        input: &mut SliceInput,
        frame: usize,
        id: u32,
        clicks: &[([f32; 2], i64)],
        bbox: Option<[f32; 4]>,
        clear_old_points: bool,
    ) -> Result<&HeadsOut> {
        self.check_frame(frame)?;
        if clicks.is_empty() && bbox.is_none() {
            return Err(Error::InvalidPrompt(
                "a prompt needs a box or at least one point".into(),
            ));
        }
        if bbox.is_some() && !clear_old_points {
            return Err(Error::InvalidPrompt(format!(
                "a box on slice {frame} must come first: add it with the slice's old points \
                 cleared (SAM 2 refuses a box after points)"
            )));
        }
        let i = self.object_index(id);
        let obj = &self.objects[i];
        let mut points = match (clear_old_points, obj.points.get(&frame)) {
            (false, Some(old)) => old.clone(),
            _ => Points {
                per_prompt: 0,
                ..Default::default()
            },
        };
        let mut new = bbox.map(box_points).unwrap_or_default();
        new.coords.extend(clicks.iter().map(|c| c.0));
        new.labels.extend(clicks.iter().map(|c| c.1));
        points.per_prompt += new.coords.len();
        points.coords.extend(new.coords);
        points.labels.extend(new.labels);
        self.objects[i].points.insert(frame, points.clone());
        self.prompt(input, i, frame, Prompt::Points(points))
    }

    /// `add_new_mask`: a binary mask at the model input size (`S × S`, 0 or 1) on `frame`.
    pub fn add_mask(
        &mut self,
        input: &mut SliceInput,
        frame: usize,
        id: u32,
        mask: Vec<f32>,
    ) -> Result<&HeadsOut> {
        self.check_frame(frame)?;
        let s = self.model.image_size;
        if mask.len() != s * s {
            return Err(Error::InvalidPrompt(format!(
                "a mask prompt of {} values, expected {s}x{s}",
                mask.len()
            )));
        }
        let i = self.object_index(id);
        self.objects[i].points.remove(&frame);
        self.prompt(input, i, frame, Prompt::Mask(mask))
    }

    /// One prompt's output (`_run_single_frame_inference` without the memory encoder), kept
    /// as a temporary output of the slice.
    fn prompt(
        &mut self,
        input: &mut SliceInput,
        i: usize,
        frame: usize,
        prompt: Prompt,
    ) -> Result<&HeadsOut> {
        let f = self.features(frame, input)?;
        let obj = &self.objects[i];
        let reverse = obj.tracked.get(&frame).copied();
        let is_init = reverse.is_none();
        let is_cond = is_init || self.corrections_as_conditioning;
        let heads = match prompt {
            Prompt::Mask(mask) => self.model.mask_as_output(&f, &mask)?,
            Prompt::Points(points) => {
                let prev = previous_logits(obj, frame, is_cond).map(|l| self.clamped(l));
                let pix = if is_init {
                    self.model.condition(&f, None)
                } else {
                    let tokens = obj.outputs.tokens(
                        &self.model,
                        frame,
                        self.num_frames,
                        reverse == Some(true),
                    );
                    self.model.condition(&f, Some(&tokens))
                };
                let multimask = points.labels.len() <= 1;
                self.model.sam_heads(pix, &f, points, prev, multimask)?
            }
        };
        let temp = &mut self.objects[i].temp;
        let store = if is_cond {
            &mut temp.cond
        } else {
            &mut temp.tracked
        };
        store.insert(
            frame,
            TrackOutput {
                heads,
                features: None,
            },
        );
        Ok(&store[&frame].heads)
    }

    /// Logits `[1, 1, 4g, 4g]` clamped to ±32, as a decoder mask input.
    fn clamped(&self, logits: &[f32]) -> Tensor<4> {
        let side = self.model.image_size / 4;
        let v: Vec<f32> = logits
            .iter()
            .map(|v| v.clamp(-LOGIT_CLAMP, LOGIT_CLAMP))
            .collect();
        Tensor::from_data(TensorData::new(v, [1, 1, side, side]), self.model.device())
    }

    /// `clear_all_prompts_in_frame`: the object's prompts on `frame` go; a prompted slice's
    /// output stays as a tracked one (and the slice counts as untracked again).
    pub fn clear_prompts(&mut self, frame: usize, id: u32) -> Result<()> {
        self.check_frame(frame)?;
        let i = self.objects.position(id)?;
        let obj = &mut self.objects[i];
        obj.points.remove(&frame);
        obj.temp.cond.remove(&frame);
        obj.temp.tracked.remove(&frame);
        if let Some(out) = obj.outputs.cond.remove(&frame) {
            obj.outputs.tracked.insert(frame, out);
            obj.tracked.remove(&frame);
        }
        Ok(())
    }

    /// `remove_object`: the object and everything about it.
    pub fn remove_object(&mut self, id: u32) -> Result<()> {
        self.objects.remove(id)
    }

    /// `reset_state`: every object and prompt goes (cached features stay).
    pub fn reset(&mut self) {
        self.objects.clear();
    }

    /// Forget every propagated result but keep the prompts and their outputs: the same as
    /// `reset_state` followed by the same prompts again (their outputs do not depend on
    /// tracking when given before it), without running them again.
    pub fn clear_tracking(&mut self) {
        for obj in self.objects.values_mut() {
            obj.outputs.tracked.clear();
            obj.tracked.clear();
        }
    }

    /// `propagate_in_video_preflight`: temporary outputs join the outputs, their memories
    /// encoded from their binarised masks.
    fn preflight(&mut self, input: &mut SliceInput) -> Result<()> {
        if self.objects.is_empty() {
            return Err(Error::InvalidPrompt(
                "no prompts: add a box, points or a mask first".into(),
            ));
        }
        for i in 0..self.objects.len() {
            for cond in [false, true] {
                let temp = &mut self.objects[i].temp;
                let pending = std::mem::take(if cond {
                    &mut temp.cond
                } else {
                    &mut temp.tracked
                });
                for (t, mut out) in pending {
                    if out.features.is_none() {
                        let f = self.features(t, input)?;
                        out.features =
                            Some(self.model.encode_memory(&f, &out.heads, true)?.features);
                    }
                    let outputs = &mut self.objects[i].outputs;
                    let store = if cond {
                        &mut outputs.cond
                    } else {
                        &mut outputs.tracked
                    };
                    store.insert(t, out);
                }
            }
            let id = self.objects.id(i);
            let obj = &mut self.objects[i];
            if obj.outputs.cond.is_empty() {
                return Err(Error::InvalidPrompt(format!(
                    "object {id} has no prompt left: add a box, points or a mask for it"
                )));
            }
            let cond: Vec<usize> = obj.outputs.cond.keys().copied().collect();
            cond.iter().for_each(|t| {
                obj.outputs.tracked.remove(t);
            });
        }
        Ok(())
    }

    /// `propagate_in_video`: from `start` (default: the earliest prompted slice of any
    /// object) over at most `max_frames` slices, forward or in reverse (nothing in reverse
    /// from slice 0). `visit(z, outputs)` receives each slice's `(object id, output)` in
    /// object order, and may end the propagation there. Returns the slices visited.
    pub fn propagate(
        &mut self,
        input: &mut SliceInput,
        reverse: bool,
        start: Option<usize>,
        max_frames: Option<usize>,
        visit: &mut SliceVisit,
    ) -> Result<Vec<usize>> {
        self.preflight(input)?;
        let start = match start {
            Some(s) => {
                self.check_frame(s)?;
                s
            }
            None => self.earliest_prompt(),
        };
        let order = processing_order(
            start,
            max_frames.unwrap_or(self.num_frames),
            self.num_frames,
            reverse,
        );
        let mut visited = Vec::with_capacity(order.len());
        for t in order {
            for i in 0..self.objects.len() {
                self.track(input, i, t, reverse)?;
            }
            let outs: Vec<(u32, &HeadsOut)> = self
                .objects
                .iter()
                .map(|(id, o)| (id, &o.outputs.output(t).expect("just tracked").heads))
                .collect();
            visited.push(t);
            if visit(t, &outs)?.is_break() {
                break;
            }
        }
        Ok(visited)
    }

    fn earliest_prompt(&self) -> usize {
        let firsts = self
            .objects
            .iter()
            .filter_map(|(_, o)| o.outputs.cond.keys().next());
        firsts.copied().min().unwrap_or(0)
    }

    /// One object on one slice: a prompted slice keeps its output, any other is tracked
    /// (memory-conditioned features, multimask heads, its memory from the sigmoid).
    fn track(&mut self, input: &mut SliceInput, i: usize, t: usize, reverse: bool) -> Result<()> {
        if !self.objects[i].outputs.cond.contains_key(&t) {
            let f = self.features(t, input)?;
            let obj = &self.objects[i];
            let tokens = obj.outputs.tokens(&self.model, t, self.num_frames, reverse);
            let pix = self.model.condition(&f, Some(&tokens));
            let heads = self.model.sam_heads(pix, &f, no_points(), None, true)?;
            let features = Some(self.model.encode_memory(&f, &heads, false)?.features);
            let outputs = &mut self.objects[i].outputs;
            outputs.tracked.insert(t, TrackOutput { heads, features });
            if self.single_pass {
                outputs.forget_behind(t, self.num_frames);
            }
        }
        self.objects[i].tracked.insert(t, reverse);
        Ok(())
    }

    /// The object's latest output on `frame`: a prompt not yet propagated first, then a
    /// prompted slice's, then a tracked one's (what upstream shows for the slice).
    pub fn output(&self, id: u32, frame: usize) -> Option<&HeadsOut> {
        let obj = self.objects.get(id)?;
        let out = obj
            .temp
            .output(frame)
            .or_else(|| obj.outputs.output(frame))?;
        Some(&out.heads)
    }

    /// Slices holding an output of object `id`.
    pub fn frames_with_output(&self, id: u32) -> Vec<usize> {
        let Some(obj) = self.objects.get(id) else {
            return Vec::new();
        };
        let mut all: Vec<usize> = [&obj.temp, &obj.outputs]
            .iter()
            .flat_map(|o| o.cond.keys().chain(o.tracked.keys()).copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// A prompt on one slice.
enum Prompt {
    Points(Points),
    Mask(Vec<f32>),
}

/// The object's earlier logits on `frame` (temporary first, then prompted, then tracked).
fn previous_logits(obj: &TrackedObject, frame: usize, is_cond: bool) -> Option<&[f32]> {
    let temp = if is_cond {
        &obj.temp.cond
    } else {
        &obj.temp.tracked
    };
    let out = temp.get(&frame).or_else(|| obj.outputs.output(frame))?;
    Some(&out.heads.low_res)
}

/// Upstream's processing order from `start` over at most `max` slices.
pub fn processing_order(start: usize, max: usize, num_frames: usize, reverse: bool) -> Vec<usize> {
    if reverse {
        if start == 0 {
            return Vec::new();
        }
        let end = start.saturating_sub(max);
        (end..=start).rev().collect()
    } else {
        let end = (start + max).min(num_frames - 1);
        (start..=end).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_order_is_upstreams() {
        assert_eq!(processing_order(3, 10, 6, false), vec![3, 4, 5]);
        assert_eq!(processing_order(3, 1, 6, false), vec![3, 4]);
        assert_eq!(processing_order(3, 10, 6, true), vec![3, 2, 1, 0]);
        assert_eq!(processing_order(3, 1, 6, true), vec![3, 2]);
        assert!(processing_order(0, 10, 6, true).is_empty());
    }

    #[test]
    fn feature_bytes_at_512() {
        // 256·32² (features) + 256·32² (position) + 32·128² + 64·64², f32.
        assert_eq!(
            feature_bytes(512),
            4 * (262_144 + 262_144 + 524_288 + 262_144)
        );
    }
}
