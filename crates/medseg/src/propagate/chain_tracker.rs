//! A 3D session for MedSAM and LiteMedSAM, which have no memory: the chain rule
//! ([`super::chain`]) run from every prompted slice.
//!
//! - A prompt on a slice (a box, clicks, or both) gives that slice's mask by one decoder run.
//!   Clicks on a slice that already holds a mask refine it, SAM's way: the slice's box (the
//!   user's, or the one the chain gave it) with all its clicks, and the earlier low-res logits
//!   as the mask input. A box comes first (it needs the slice's old prompts cleared).
//! - Propagation forgets the masks it made before where it can reach (above the lowest
//!   prompted slice going up, below the highest going down; prompted slices keep theirs) and
//!   runs the chain outward from each prompted slice, lowest first: each next slice takes the bounding
//!   box of its neighbour's mask grown by `margin` pixels at the 256 scale, and a direction
//!   stops at an empty mask, at a slice whose mean 8-bit intensity inside the mask differs
//!   from the prompted slice's by more than the drift limit (not kept), at another prompted
//!   slice, at a slice this propagation already reached, or at the edge of the range.
//!
//! So a correction on slice `s` becomes `s`'s prompt and the chain re-runs outward from `s`.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::objects::Objects;
use crate::preprocess::Image;
use crate::segmenter::{ImageEmbedding, Prediction, Segmenter};
use crate::slice_cache::SliceCache;

/// Gives slice `z` as an 8-bit image.
pub type SliceImage<'a> = dyn FnMut(usize) -> Result<Image> + 'a;

/// One slice's result for one object.
#[derive(Debug, Clone)]
pub struct ChainOutput {
    /// Low-res logits (256²) in the model frame.
    pub low_res: Vec<f32>,
    /// The mask at the slice's size.
    pub mask: Vec<bool>,
    /// The box it was decoded with, in the model frame (none: clicks alone).
    pub model_box: Option<[f32; 4]>,
    /// Mean 8-bit intensity inside the mask (`None`: empty).
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct ChainPrompt {
    model_box: Option<[f32; 4]>,
    points: Vec<([f64; 2], i64)>,
}

#[derive(Debug, Clone)]
struct ChainObject {
    prompts: BTreeMap<usize, ChainPrompt>,
    results: BTreeMap<usize, ChainOutput>,
}

/// The chain rule's session state over `num_frames` slices.
#[derive(Debug, Clone)]
pub struct ChainTracker {
    seg: Segmenter,
    frame: Frame,
    num_frames: usize,
    /// Box growth in pixels at the 256 scale (official: 3).
    pub margin: usize,
    /// The drift limit in grey levels (`None`: never).
    pub max_drift: Option<f64>,
    objects: Objects<ChainObject>,
    cache: SliceCache<ImageEmbedding>,
}

impl ChainTracker {
    /// A chain session over `num_frames` slices of `frame`'s size, keeping up to
    /// `cache_slices` image embeddings.
    pub fn new(seg: Segmenter, frame: Frame, num_frames: usize, cache_slices: usize) -> Self {
        Self {
            seg,
            frame,
            num_frames,
            margin: 3,
            max_drift: Some(40.0),
            objects: Objects::default(),
            cache: SliceCache::new(cache_slices),
        }
    }

    /// Object ids in the order they were first prompted.
    pub fn object_ids(&self) -> Vec<u32> {
        self.objects.ids()
    }

    fn embedding(&mut self, z: usize, image: &mut SliceImage) -> Result<(ImageEmbedding, Image)> {
        let img = image(z)?;
        let seg = &self.seg;
        let emb = self.cache.get_or(z, || seg.embed(&img))?;
        Ok((emb, img))
    }

    fn object_index(&mut self, id: u32) -> usize {
        self.objects.position_or_insert(id, || ChainObject {
            prompts: BTreeMap::new(),
            results: BTreeMap::new(),
        })
    }

    /// A box (image pixels) and/or clicks on `slice` for object `id` (see the module docs).
    pub fn add_points_or_box(
        &mut self,
        image: &mut SliceImage,
        slice: usize,
        id: u32,
        points: &[([f64; 2], i64)],
        bbox: Option<[f64; 4]>,
        clear_old_points: bool,
    ) -> Result<&ChainOutput> {
        if bbox.is_some() && !clear_old_points {
            return Err(Error::InvalidPrompt(format!(
                "a box on slice {slice} must come first: add it with the slice's old points cleared"
            )));
        }
        let i = self.object_index(id);
        let obj = &self.objects[i];
        let earlier = obj.results.get(&slice);
        let mut prompt = match (clear_old_points, obj.prompts.get(&slice)) {
            (false, Some(old)) => old.clone(),
            _ => ChainPrompt::default(),
        };
        prompt.points.extend_from_slice(points);
        prompt.model_box = match bbox {
            Some(b) => Some(self.frame.box_to_model(b)),
            None => prompt.model_box.or(earlier.and_then(|e| e.model_box)),
        };
        let mask_input = if bbox.is_none() {
            earlier.map(|e| e.low_res.clone())
        } else {
            None
        };
        let (emb, img) = self.embedding(slice, image)?;
        let pred = self.seg.predict_refined(
            &emb,
            prompt.model_box,
            &prompt.points,
            mask_input.as_deref(),
        )?;
        let out = output(&pred, prompt.model_box, &img);
        let obj = &mut self.objects[i];
        obj.prompts.insert(slice, prompt);
        obj.results.insert(slice, out);
        Ok(&obj.results[&slice])
    }

    /// The object's prompts on `slice` go; its mask there stays until a propagation.
    pub fn clear_prompts(&mut self, slice: usize, id: u32) -> Result<()> {
        let i = self.objects.position(id)?;
        self.objects[i].prompts.remove(&slice);
        Ok(())
    }

    /// Remove an object.
    pub fn remove_object(&mut self, id: u32) -> Result<()> {
        self.objects.remove(id)
    }

    /// Every object and prompt goes (cached embeddings stay).
    pub fn reset(&mut self) {
        self.objects.clear();
    }

    /// Re-run the chain of every object from its prompted slices inside `lo..=hi`, up and/or
    /// down; `visit(z)` after each slice decoded. Returns the slices decoded, in order.
    pub fn propagate(
        &mut self,
        image: &mut SliceImage,
        (lo, hi): (usize, usize),
        (up, down): (bool, bool),
        visit: &mut dyn FnMut(usize),
    ) -> Result<Vec<usize>> {
        if self.objects.is_empty() {
            return Err(Error::InvalidPrompt(
                "no prompts: add a box or points first".into(),
            ));
        }
        let mut sweep = Sweep {
            done: BTreeSet::new(),
            visited: Vec::new(),
            visit,
        };
        for i in 0..self.objects.len() {
            let obj = &mut self.objects[i];
            let prompted: BTreeSet<usize> = obj.prompts.keys().copied().collect();
            let mut inside = prompted.range(lo..=hi);
            let (Some(&first), Some(&last)) = (inside.next(), prompted.range(lo..=hi).next_back())
            else {
                continue;
            };
            // What this propagation can reach: above the lowest prompted slice going up,
            // below the highest going down.
            let from = if down { lo } else { first + 1 };
            let to = if up { hi } else { last.saturating_sub(1) };
            obj.results
                .retain(|z, _| prompted.contains(z) || *z < from || *z > to);
            sweep.done = prompted.clone();
            for &p in prompted.range(lo..=hi) {
                let origin = self.objects[i].results.get(&p).and_then(|r| r.mean);
                if up {
                    let zs: Vec<usize> = (p + 1..=hi).collect();
                    self.chain(image, (i, p, origin), &zs, &mut sweep)?;
                }
                if down {
                    let zs: Vec<usize> = (lo..p).rev().collect();
                    self.chain(image, (i, p, origin), &zs, &mut sweep)?;
                }
            }
        }
        Ok(sweep.visited)
    }

    /// One direction of the chain of object `i` from slice `from` over `zs`.
    fn chain(
        &mut self,
        image: &mut SliceImage,
        (i, from, origin): (usize, usize, Option<f64>),
        zs: &[usize],
        sweep: &mut Sweep,
    ) -> Result<()> {
        let mut prev = from;
        for &z in zs {
            if sweep.done.contains(&z) {
                break;
            }
            let Some(prev_mask) = self.objects[i].results.get(&prev).map(|r| r.mask.clone()) else {
                break;
            };
            let Some(next) = self.frame.next_box(&prev_mask, self.margin) else {
                break;
            };
            let (emb, img) = self.embedding(z, image)?;
            let pred = self
                .seg
                .predict_refined(&emb, Some(next.model), &[], None)?;
            let out = output(&pred, Some(next.model), &img);
            if let (Some(limit), Some(o), Some(m)) = (self.max_drift, origin, out.mean) {
                if (m - o).abs() > limit {
                    break;
                }
            }
            self.objects[i].results.insert(z, out);
            sweep.done.insert(z);
            if !sweep.visited.contains(&z) {
                sweep.visited.push(z);
            }
            (sweep.visit)(z);
            prev = z;
        }
        Ok(())
    }

    /// The object's result on `slice`.
    pub fn output(&self, id: u32, slice: usize) -> Option<&ChainOutput> {
        self.objects.get(id)?.results.get(&slice)
    }

    /// Slices holding a result for `id`.
    pub fn frames_with_output(&self, id: u32) -> Vec<usize> {
        self.objects
            .get(id)
            .map(|o| o.results.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Slices in the volume.
    pub fn num_frames(&self) -> usize {
        self.num_frames
    }
}

/// What one propagation has reached.
struct Sweep<'a> {
    done: BTreeSet<usize>,
    visited: Vec<usize>,
    visit: &'a mut dyn FnMut(usize),
}

/// A prediction as a slice's result, with its mean 8-bit intensity inside the mask.
fn output(pred: &Prediction, model_box: Option<[f32; 4]>, img: &Image) -> ChainOutput {
    let mask = pred.mask(0, 0).to_vec();
    let (sum, count) = mask
        .iter()
        .zip(&img.data)
        .filter(|(m, _)| **m)
        .fold((0.0, 0usize), |(s, c), (_, &v)| (s + f64::from(v), c + 1));
    ChainOutput {
        low_res: pred.logits(0, 0).to_vec(),
        mask,
        model_box,
        mean: (count > 0).then(|| sum / count as f64),
    }
}
