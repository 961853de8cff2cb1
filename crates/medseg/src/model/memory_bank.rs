//! Which memories a slice attends to, as SAM 2's `_prepare_memory_conditioned_features`
//! chooses them for one object tracked in one direction from one conditioning (key) slice:
//! the key slice's memory (temporal slot 0), the memories of the 6 slices just behind the
//! current one (slots 1..6, the farthest first), then the object pointers — the key slice's
//! (if it is behind, at its signed distance) and those of up to 15 slices just behind.
//! Slices farther back than any rule reaches are dropped, so memory does not grow with the
//! number of slices.

use std::collections::BTreeMap;

use super::memory_attention::MemoryTokens;
use super::sam2::{Sam2, SliceMemory, MAX_OBJ_PTRS, NUM_MASKMEM};

/// The memory bank of one pass.
#[derive(Debug, Clone)]
pub struct MemoryBank {
    key: usize,
    key_memory: SliceMemory,
    recent: BTreeMap<usize, SliceMemory>,
    num_frames: usize,
    reverse: bool,
}

impl MemoryBank {
    /// A pass over `num_frames` slices from `key` (whose memory is `key_memory`), towards
    /// higher indices, or lower ones when `reverse`.
    pub fn new(key: usize, key_memory: SliceMemory, num_frames: usize, reverse: bool) -> Self {
        Self {
            key,
            key_memory,
            recent: BTreeMap::new(),
            num_frames,
            reverse,
        }
    }

    /// Object pointers a slice sees at most (`min(num_frames, 16)`).
    fn max_ptrs(&self) -> usize {
        self.num_frames.min(MAX_OBJ_PTRS)
    }

    /// The slice `steps` behind `frame` in this pass's direction, if inside the volume.
    fn behind(&self, frame: usize, steps: usize) -> Option<usize> {
        let t = if self.reverse {
            frame.checked_add(steps)?
        } else {
            frame.checked_sub(steps)?
        };
        (t < self.num_frames).then_some(t)
    }

    /// Keep a tracked slice's memory; forget slices no later slice can reach.
    pub fn insert(&mut self, frame: usize, memory: SliceMemory) {
        self.recent.insert(frame, memory);
        let reach = NUM_MASKMEM.max(self.max_ptrs());
        self.recent.retain(|&t, _| t.abs_diff(frame) < reach);
    }

    /// Slices whose memory is held now (the key slice aside).
    pub fn held(&self) -> Vec<usize> {
        self.recent.keys().copied().collect()
    }

    /// `(t_pos, slice)` of the spatial memories `frame` attends to, in upstream's order.
    pub fn spatial_slots(&self, frame: usize) -> Vec<(usize, Option<usize>)> {
        let mut slots = vec![(0, None)];
        for t_pos in 1..NUM_MASKMEM {
            if let Some(t) = self.behind(frame, NUM_MASKMEM - t_pos) {
                if self.recent.contains_key(&t) {
                    slots.push((t_pos, Some(t)));
                }
            }
        }
        slots
    }

    /// `(signed distance, slice)` of the object pointers `frame` attends to (`None`: the key).
    pub fn pointer_slots(&self, frame: usize) -> Vec<(i64, Option<usize>)> {
        let mut slots = Vec::new();
        let key_behind = if self.reverse {
            self.key >= frame
        } else {
            self.key <= frame
        };
        if key_behind {
            let d = frame as i64 - self.key as i64;
            slots.push((if self.reverse { -d } else { d }, None));
        }
        for t_diff in 1..self.max_ptrs() {
            let Some(t) = self.behind(frame, t_diff) else {
                break;
            };
            if self.recent.contains_key(&t) {
                slots.push((t_diff as i64, Some(t)));
            }
        }
        slots
    }

    /// The memory tokens of `frame` for the memory attention.
    pub fn tokens(&self, model: &Sam2, frame: usize) -> MemoryTokens {
        let memory = |t: Option<usize>| match t {
            None => &self.key_memory,
            Some(t) => &self.recent[&t],
        };
        let spatial: Vec<(usize, &SliceMemory)> = self
            .spatial_slots(frame)
            .into_iter()
            .map(|(p, t)| (p, memory(t)))
            .collect();
        let pointers: Vec<(i64, &burn::tensor::Tensor<2>)> = self
            .pointer_slots(frame)
            .into_iter()
            .map(|(d, t)| (d, &memory(t).obj_ptr))
            .collect();
        model.memory_tokens(&spatial, &pointers, self.max_ptrs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    fn memory() -> SliceMemory {
        let device = burn::tensor::Device::default();
        SliceMemory {
            features: Tensor::zeros([1, 1, 1], &device),
            obj_ptr: Tensor::zeros([1, 1], &device),
        }
    }

    fn bank(key: usize, frames: usize, reverse: bool, tracked: &[usize]) -> MemoryBank {
        let mut b = MemoryBank::new(key, memory(), frames, reverse);
        for &t in tracked {
            b.insert(t, memory());
        }
        b
    }

    #[test]
    fn forward_slots_follow_sam2() {
        // Key 4, slices 5..=12 tracked, now slice 13: the key (slot 0), then slices 7..=12
        // as slots 1..=6 (slot 1 the farthest, 6 slices back).
        let b = bank(4, 20, false, &[5, 6, 7, 8, 9, 10, 11, 12]);
        let spatial = b.spatial_slots(13);
        let expect: Vec<(usize, Option<usize>)> = vec![
            (0, None),
            (1, Some(7)),
            (2, Some(8)),
            (3, Some(9)),
            (4, Some(10)),
            (5, Some(11)),
            (6, Some(12)),
        ];
        assert_eq!(spatial, expect);
        // Pointers: the key at +9, then slices 12, 11, ..., 5 at 1..=8 (the key itself is not
        // among the tracked slices).
        let ptrs = b.pointer_slots(13);
        assert_eq!(ptrs[0], (9, None));
        let rest: Vec<(i64, Option<usize>)> = (1..=8).map(|d| (d, Some(13 - d as usize))).collect();
        assert_eq!(&ptrs[1..], &rest[..]);
    }

    #[test]
    fn the_first_tracked_slice_sees_only_the_key() {
        let b = bank(4, 14, false, &[]);
        assert_eq!(b.spatial_slots(5), vec![(0, None)]);
        assert_eq!(b.pointer_slots(5), vec![(1, None)]);
    }

    #[test]
    fn reverse_distances_are_signed_as_upstream() {
        // Backwards from key 4: slice 2 sees slice 3 (1 behind) and the key at distance
        // (2 − 4) · −1 = 2.
        let b = bank(4, 14, true, &[3]);
        assert_eq!(b.spatial_slots(2), vec![(0, None), (6, Some(3))]);
        assert_eq!(b.pointer_slots(2), vec![(2, None), (1, Some(3))]);
    }

    #[test]
    fn pointers_stop_at_the_volume_edge_and_the_bank_forgets_far_slices() {
        // 6 slices: at most 6 pointers (key + 5 behind).
        let b = bank(0, 6, false, &[1, 2, 3, 4]);
        assert_eq!(b.pointer_slots(5).len(), 5);
        // 100 slices: after slice 40, nothing 16 or more slices back is kept.
        let b = bank(0, 100, false, &(1..=40).collect::<Vec<_>>());
        assert_eq!(b.held(), (25..=40).collect::<Vec<_>>());
    }
}
