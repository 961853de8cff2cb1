//! What a slice attends to, as SAM 2's `_prepare_memory_conditioned_features` chooses it for
//! one object from that object's outputs (`output_dict`: conditioning and non-conditioning
//! slices):
//! - every conditioning (prompted) slice's memory, temporal slot 0;
//! - the memories of the 6 slices just behind the current one in the tracking direction
//!   (slots 1..6, the farthest first), where a non-conditioning output exists;
//! - the object pointers of the conditioning slices at or behind the current one (at their
//!   signed distance), then those of up to 15 non-conditioning slices just behind it.
//!
//! MedSAM2's values (`max_cond_frames_in_attn = -1`: all conditioning slices are selected, so
//! none counts as "unselected"; `memory_temporal_stride_for_eval = 1`).

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::memory_attention::MemoryTokens;
use super::sam2::{HeadsOut, Sam2, MAX_OBJ_PTRS, NUM_MASKMEM};

/// One slice's output for one object (the predictor's compact `current_out`).
#[derive(Debug, Clone)]
pub struct TrackOutput {
    /// What the heads gave (chosen low-res logits, object score, object pointer).
    pub heads: HeadsOut,
    /// `[1, g·g, 64]` memory features (bfloat16-rounded); `None` until the memory encoder
    /// has run (a prompt's output before propagation).
    pub features: Option<Tensor<3>>,
}

/// Where a memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A conditioning slice.
    Cond(usize),
    /// A tracked (non-conditioning) slice.
    Tracked(usize),
}

/// One object's outputs (`output_dict_per_obj[obj]`).
#[derive(Debug, Clone, Default)]
pub struct ObjectOutputs {
    /// Prompted slices (`cond_frame_outputs`).
    pub cond: BTreeMap<usize, TrackOutput>,
    /// Tracked slices (`non_cond_frame_outputs`).
    pub tracked: BTreeMap<usize, TrackOutput>,
}

/// The slice `steps` behind `frame` in the tracking direction, if inside `0..num_frames`.
fn behind(frame: usize, steps: usize, num_frames: usize, reverse: bool) -> Option<usize> {
    let t = if reverse {
        frame.checked_add(steps)?
    } else {
        frame.checked_sub(steps)?
    };
    (t < num_frames).then_some(t)
}

/// Object pointers a slice sees at most (`min(num_frames, 16)`).
pub fn max_ptrs(num_frames: usize) -> usize {
    num_frames.min(MAX_OBJ_PTRS)
}

impl ObjectOutputs {
    /// The output of `slot`.
    pub fn get(&self, slot: Slot) -> &TrackOutput {
        match slot {
            Slot::Cond(t) => &self.cond[&t],
            Slot::Tracked(t) => &self.tracked[&t],
        }
    }

    /// The latest output on slice `t` (a conditioning one first).
    pub fn output(&self, t: usize) -> Option<&TrackOutput> {
        self.cond.get(&t).or_else(|| self.tracked.get(&t))
    }

    /// `(t_pos, slot)` of the spatial memories `frame` attends to, in upstream's order.
    pub fn spatial_slots(
        &self,
        frame: usize,
        num_frames: usize,
        reverse: bool,
    ) -> Vec<(usize, Slot)> {
        let mut slots: Vec<(usize, Slot)> = self.cond.keys().map(|&t| (0, Slot::Cond(t))).collect();
        for t_pos in 1..NUM_MASKMEM {
            let Some(t) = behind(frame, NUM_MASKMEM - t_pos, usize::MAX, reverse) else {
                continue;
            };
            if t < num_frames && self.tracked.contains_key(&t) {
                slots.push((t_pos, Slot::Tracked(t)));
            }
        }
        slots
    }

    /// `(signed distance, slot)` of the object pointers `frame` attends to.
    pub fn pointer_slots(
        &self,
        frame: usize,
        num_frames: usize,
        reverse: bool,
    ) -> Vec<(i64, Slot)> {
        let sign = if reverse { -1 } else { 1 };
        let mut slots: Vec<(i64, Slot)> = self
            .cond
            .keys()
            .filter(|&&t| if reverse { t >= frame } else { t <= frame })
            .map(|&t| ((frame as i64 - t as i64) * sign, Slot::Cond(t)))
            .collect();
        for t_diff in 1..max_ptrs(num_frames) {
            let Some(t) = behind(frame, t_diff, num_frames, reverse) else {
                break;
            };
            if self.tracked.contains_key(&t) {
                slots.push((t_diff as i64, Slot::Tracked(t)));
            }
        }
        slots
    }

    /// The memory tokens of `frame` for the memory attention. Every output it names must
    /// have its memory encoded.
    pub fn tokens(
        &self,
        model: &Sam2,
        frame: usize,
        num_frames: usize,
        reverse: bool,
    ) -> MemoryTokens {
        let spatial: Vec<(usize, &Tensor<3>)> = self
            .spatial_slots(frame, num_frames, reverse)
            .into_iter()
            .filter_map(|(p, s)| self.get(s).features.as_ref().map(|f| (p, f)))
            .collect();
        let pointers: Vec<(i64, &Tensor<2>)> = self
            .pointer_slots(frame, num_frames, reverse)
            .into_iter()
            .map(|(d, s)| (d, &self.get(s).heads.obj_ptr))
            .collect();
        model.memory_tokens(&spatial, &pointers, max_ptrs(num_frames))
    }

    /// Forget tracked slices that no slice after `frame` (in the tracking direction) can
    /// reach: only for a single pass that will not come back (MedSAM2's 3D script), so that
    /// memory does not grow with the slice count.
    pub fn forget_behind(&mut self, frame: usize, num_frames: usize) {
        let reach = NUM_MASKMEM.max(max_ptrs(num_frames));
        self.tracked.retain(|&t, _| t.abs_diff(frame) < reach);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    fn output() -> TrackOutput {
        let device = burn::tensor::Device::flex();
        TrackOutput {
            heads: HeadsOut {
                low_res: Vec::new(),
                candidates: Vec::new(),
                iou: Vec::new(),
                obj_ptr: Tensor::zeros([1, 1], &device),
                object_score: 1.0,
            },
            features: Some(Tensor::zeros([1, 1, 1], &device)),
        }
    }

    fn outputs(cond: &[usize], tracked: &[usize]) -> ObjectOutputs {
        let mut o = ObjectOutputs::default();
        for &t in cond {
            o.cond.insert(t, output());
        }
        for &t in tracked {
            o.tracked.insert(t, output());
        }
        o
    }

    #[test]
    fn forward_slots_follow_sam2() {
        // Key 4, slices 5..=12 tracked, now slice 13: the key (slot 0), then slices 7..=12
        // as slots 1..=6 (slot 1 the farthest, 6 slices back).
        let o = outputs(&[4], &[5, 6, 7, 8, 9, 10, 11, 12]);
        let spatial = o.spatial_slots(13, 20, false);
        let mut expect = vec![(0, Slot::Cond(4))];
        expect.extend((1..=6).map(|p| (p, Slot::Tracked(6 + p))));
        assert_eq!(spatial, expect);
        // Pointers: the key at +9, then slices 12, 11, ..., 5 at 1..=8.
        let ptrs = o.pointer_slots(13, 20, false);
        assert_eq!(ptrs[0], (9, Slot::Cond(4)));
        let rest: Vec<(i64, Slot)> = (1..=8)
            .map(|d| (d, Slot::Tracked(13 - d as usize)))
            .collect();
        assert_eq!(&ptrs[1..], &rest[..]);
    }

    #[test]
    fn the_first_tracked_slice_sees_only_the_key() {
        let o = outputs(&[4], &[]);
        assert_eq!(o.spatial_slots(5, 14, false), vec![(0, Slot::Cond(4))]);
        assert_eq!(o.pointer_slots(5, 14, false), vec![(1, Slot::Cond(4))]);
    }

    #[test]
    fn reverse_distances_are_signed_as_upstream() {
        // Backwards from key 4: slice 2 sees slice 3 (1 behind) and the key at distance
        // (2 − 4) · −1 = 2.
        let o = outputs(&[4], &[3]);
        assert_eq!(
            o.spatial_slots(2, 14, true),
            vec![(0, Slot::Cond(4)), (6, Slot::Tracked(3))]
        );
        assert_eq!(
            o.pointer_slots(2, 14, true),
            vec![(2, Slot::Cond(4)), (1, Slot::Tracked(3))]
        );
    }

    #[test]
    fn every_prompted_slice_is_a_memory_but_only_past_ones_give_pointers() {
        // Prompts on 2 and 9; tracking forward at 5: both memories at slot 0, the pointer of 2
        // only (9 lies ahead); tracked 3 and 4 behind.
        let o = outputs(&[2, 9], &[3, 4, 6]);
        let spatial = o.spatial_slots(5, 12, false);
        assert_eq!(
            spatial,
            vec![
                (0, Slot::Cond(2)),
                (0, Slot::Cond(9)),
                (5, Slot::Tracked(3)),
                (6, Slot::Tracked(4))
            ]
        );
        let ptrs = o.pointer_slots(5, 12, false);
        assert_eq!(
            ptrs,
            vec![
                (3, Slot::Cond(2)),
                (1, Slot::Tracked(4)),
                (2, Slot::Tracked(3))
            ]
        );
    }

    #[test]
    fn pointers_stop_at_the_volume_edge_and_single_passes_forget_far_slices() {
        let o = outputs(&[0], &[1, 2, 3, 4]);
        assert_eq!(o.pointer_slots(5, 6, false).len(), 5);
        let mut o = outputs(&[0], &(1..=40).collect::<Vec<_>>());
        o.forget_behind(40, 100);
        assert_eq!(
            o.tracked.keys().copied().collect::<Vec<_>>(),
            (25..=40).collect::<Vec<_>>()
        );
    }
}
