//! SAM 2 (`sam2/modeling/sam2_base.py`) as MedSAM2 runs it: the image encoder, the SAM heads
//! (prompt encoder + mask decoder + object pointer), the memory encoder and the memory
//! attention, with the steps of `track_step` as plain functions. Which memories a slice sees is
//! decided in [`super::memory_bank`]; the loop over slices lives in `crate::propagate::memory`.

use burn::tensor::{Device, Tensor, TensorData};

use super::common::to_vec;
use super::common::{Linear, Loader};
use super::mask_decoder::Mlp;
use super::memory_attention::{MemoryAttention, MemoryTokens};
use super::memory_encoder::MemoryEncoder;
use super::prompt_encoder::{Points, PromptBatch, PromptEncoder};
use super::sam2_image_encoder::Sam2ImageEncoder;
use super::sam2_mask_decoder::{HighRes, Sam2MaskDecoder};
use super::sam2_prompts::no_points;
use crate::error::Result;
use crate::preprocess::{bilinear_resize, sigmoid};
use crate::weights::StateDict;

/// Mask logits of a slice without the object (`NO_OBJ_SCORE`).
pub const NO_OBJ_SCORE: f32 = -1024.0;
/// Memories a slice attends to: the conditioning slice and the 6 slices before it.
pub const NUM_MASKMEM: usize = 7;
/// Object pointers a slice attends to at most (`max_obj_ptrs_in_encoder`).
pub const MAX_OBJ_PTRS: usize = 16;
/// Channels of the image features (`hidden_dim`) and of the memories (`mem_dim`).
const HIDDEN: usize = 256;
const MEM: usize = 64;

/// One slice's image features, as the heads and the memory encoder take them.
#[derive(Debug, Clone)]
pub struct FrameFeatures {
    /// The coarsest kept level, `[1, 256, g, g]` (g = S / 16).
    pub vision: Tensor<4>,
    /// Its positional encoding.
    pub vision_pos: Tensor<4>,
    /// The two finer levels through `conv_s0`, `conv_s1`.
    pub high_res: HighRes,
}

/// What the SAM heads give for one slice (`_forward_sam_heads`), batch 1.
#[derive(Debug, Clone)]
pub struct HeadsOut {
    /// The chosen low-res mask logits, `4g × 4g` row-major (`low_res_masks`); every value is
    /// [`NO_OBJ_SCORE`] when the object is absent.
    pub low_res: Vec<f32>,
    /// All candidates after the object gate, `[M, 4g, 4g]` (M = 3 multimask, else 1).
    pub candidates: Vec<f32>,
    /// Their predicted IoU.
    pub iou: Vec<f32>,
    /// `[1, 256]` the object pointer.
    pub obj_ptr: Tensor<2>,
    /// The object-score logit (> 0: present).
    pub object_score: f32,
}

/// One slice's contribution to the memory bank.
#[derive(Debug, Clone)]
pub struct SliceMemory {
    /// `[1, g·g, 64]` memory features, rounded to bfloat16 as the official predictor stores
    /// them (`maskmem_features.to(torch.bfloat16)`).
    pub features: Tensor<3>,
    /// `[1, 256]` the object pointer.
    pub obj_ptr: Tensor<2>,
}

/// SAM 2.1 Hiera-Tiny with MedSAM2's settings.
#[derive(Debug, Clone)]
pub struct Sam2 {
    /// Hiera-Tiny trunk, FPN neck.
    pub image_encoder: Sam2ImageEncoder,
    /// SAM's prompt encoder on the `S/16` grid.
    pub prompt_encoder: PromptEncoder,
    /// The mask decoder with object scores and high-res skips.
    pub mask_decoder: Sam2MaskDecoder,
    /// Mask + features → memory.
    pub memory_encoder: MemoryEncoder,
    /// Features × memory bank → conditioned features.
    pub memory_attention: MemoryAttention,
    obj_ptr_proj: Mlp,
    obj_ptr_tpos_proj: Linear,
    /// `[1, 256, 1, 1]`.
    no_mem_embed: Tensor<4>,
    /// `[NUM_MASKMEM, 64]` host values.
    maskmem_tpos_enc: Vec<f32>,
    /// `[1, 256]`.
    no_obj_ptr: Tensor<2>,
    /// `[1, 64, 1, 1]`.
    no_obj_embed_spatial: Tensor<4>,
    /// The memory's positional encoding, `[1, g·g, 64]` (the same on every slice).
    maskmem_pos: Tensor<3>,
    /// `mask_downsample` (a 4 × 4 stride-4 convolution, 1 → 1 channel): 16 weights, the bias.
    mask_downsample: Vec<f32>,
    /// Model input size (MedSAM2: 512; Meta's SAM 2.1: 1024).
    pub image_size: usize,
    device: Device,
}

impl Sam2 {
    /// Build SAM 2.1 Tiny at `image_size` from a state_dict (`MedSAM2_latest.pt`'s `model`);
    /// missing, unexpected or mis-shaped tensors are refused with an error naming them.
    pub fn from_state_dict(sd: &StateDict, image_size: usize, device: &Device) -> Result<Self> {
        sd.check_finite()?;
        let mut l = Loader::new(sd, device);
        let model = Self::load(&mut l, image_size);
        l.finish("MedSAM2 (SAM 2.1 Hiera-Tiny)")?;
        Ok(model)
    }

    fn load(l: &mut Loader, image_size: usize) -> Self {
        let g = image_size / 16;
        let image_encoder = Sam2ImageEncoder::load_tiny(l, "image_encoder");
        let size = (image_size, image_size);
        let prompt_encoder = PromptEncoder::load(l, "sam_prompt_encoder", HIDDEN, (g, g), size, 16);
        let mask_decoder = Sam2MaskDecoder::load(l, "sam_mask_decoder", HIDDEN);
        let memory_encoder = MemoryEncoder::load(l, "memory_encoder", HIDDEN, MEM);
        let memory_attention = MemoryAttention::load(l, "memory_attention", g);
        // `directly_add_no_mem_embed`: the positional twin of `no_mem_embed` is never used.
        l.skip("no_mem_pos_enc");
        // `mask_downsample` turns a mask prompt (`add_new_mask`) into the decoder's mask input.
        let mut mask_downsample = l.values("mask_downsample.weight", &[1, 1, 4, 4]);
        mask_downsample.extend(l.values("mask_downsample.bias", &[1]));
        let pos = super::position_encoding::sine(MEM, g, g);
        let maskmem_pos = super::host::transpose(&pos, 1, MEM, g * g);
        Self {
            image_encoder,
            prompt_encoder,
            mask_decoder,
            memory_encoder,
            memory_attention,
            obj_ptr_proj: Mlp::load(l, "obj_ptr_proj", &[HIDDEN; 4]),
            obj_ptr_tpos_proj: Linear::load(l, "obj_ptr_tpos_proj", HIDDEN, MEM, true),
            no_mem_embed: l
                .tensor("no_mem_embed", [1, 1, HIDDEN])
                .reshape([1, HIDDEN, 1, 1]),
            maskmem_tpos_enc: l.values("maskmem_tpos_enc", &[NUM_MASKMEM, 1, 1, MEM]),
            no_obj_ptr: l.tensor("no_obj_ptr", [1, HIDDEN]),
            no_obj_embed_spatial: l
                .tensor("no_obj_embed_spatial", [1, MEM])
                .reshape([1, MEM, 1, 1]),
            maskmem_pos: l.from_vec(maskmem_pos, [1, g * g, MEM]),
            mask_downsample,
            image_size,
            device: l.device.clone(),
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `forward_image`: a normalised `[1, 3, S, S]` slice → its features.
    pub fn encode_image(&self, x: Tensor<4>) -> FrameFeatures {
        let out = self.image_encoder.forward(x);
        let mut fpn = out.backbone_fpn.into_iter();
        let (f0, f1) = (fpn.next().expect("3 levels"), fpn.next().expect("3 levels"));
        FrameFeatures {
            vision: out.vision_features,
            vision_pos: out.vision_pos_enc[2].clone(),
            high_res: self.mask_decoder.high_res(f0, f1),
        }
    }

    /// `_prepare_memory_conditioned_features`: the key slice gets `no_mem_embed` added
    /// (`directly_add_no_mem_embed`), every other slice attends to its memory bank.
    pub fn condition(&self, f: &FrameFeatures, memory: Option<&MemoryTokens>) -> Tensor<4> {
        let Some(memory) = memory else {
            return f.vision.clone() + self.no_mem_embed.clone();
        };
        let [b, c, h, w] = f.vision.dims();
        let rows = |t: &Tensor<4>| t.clone().reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self
            .memory_attention
            .forward(rows(&f.vision), rows(&f.vision_pos), memory);
        out.swap_dims(1, 2).reshape([b, c, h, w])
    }

    /// `_forward_sam_heads` on conditioned features `pix` with point prompts in the model
    /// frame (a box is two points labelled 2 and 3; none: one padding point) and optionally a
    /// mask input (`[1, 1, 4g, 4g]` logits: a refined slice's previous ones, clamped to ±32).
    pub fn sam_heads(
        &self,
        pix: Tensor<4>,
        f: &FrameFeatures,
        points: Points,
        mask: Option<Tensor<4>>,
        multimask: bool,
    ) -> Result<HeadsOut> {
        let prompts = PromptBatch {
            points: Some(points),
            boxes: None,
            masks: mask,
        };
        let (sparse, dense) = self.prompt_encoder.forward(&prompts);
        let pe = self.prompt_encoder.dense_pe();
        let out = self
            .mask_decoder
            .forward(pix, pe, sparse, dense, &f.high_res);
        let object_score = to_vec(out.object_score)?[0];
        let masks = to_vec(out.masks)?;
        let iou = to_vec(out.iou)?;
        let plane = masks.len() / 4;
        let chosen = choose(&masks, &iou, plane, multimask);
        let token = (!multimask).then_some(0);
        let present = object_score > 0.0;
        let gate = |v: f32| if present { v } else { NO_OBJ_SCORE };
        let candidates: Vec<f32> = chosen
            .iter()
            .flat_map(|&i| masks[i * plane..(i + 1) * plane].iter().map(|&v| gate(v)))
            .collect();
        let cand_iou: Vec<f32> = chosen.iter().map(|&i| iou[i]).collect();
        let best = argmax(&cand_iou);
        let token = token.unwrap_or(chosen[best]);
        let low_res = candidates[best * plane..(best + 1) * plane].to_vec();
        let sam_token = out
            .mask_tokens
            .slice([0..1, token..token + 1, 0..HIDDEN])
            .reshape([1, HIDDEN]);
        let obj_ptr = if present {
            self.obj_ptr_proj.forward(sam_token)
        } else {
            self.no_obj_ptr.clone()
        };
        Ok(HeadsOut {
            low_res,
            candidates,
            iou: cand_iou,
            obj_ptr,
            object_score,
        })
    }

    /// `_use_mask_as_output`: a binary mask prompt at the model input size (`S × S`, 0 or 1)
    /// taken as the slice's output (logits ±10, shrunk to `4g` anti-aliased; IoU 1); its
    /// object pointer from the heads on the raw features with the mask downsampled as input,
    /// `no_obj_ptr` when the mask is empty.
    pub fn mask_as_output(&self, f: &FrameFeatures, mask: &[f32]) -> Result<HeadsOut> {
        let s = self.image_size;
        let high: Vec<f32> = mask.iter().map(|&v| v * 20.0 - 10.0).collect();
        let low_res = crate::preprocess::antialias_resize(&high, s, s, s / 4, s / 4);
        let down = conv4x4_stride4(mask, s, &self.mask_downsample);
        let down = Tensor::from_data(TensorData::new(down, [1, 1, s / 4, s / 4]), &self.device);
        let heads = self.sam_heads(f.vision.clone(), f, no_points(), Some(down), false)?;
        let present = mask.iter().any(|&v| v > 0.0);
        Ok(HeadsOut {
            candidates: low_res.clone(),
            low_res,
            iou: vec![1.0],
            obj_ptr: if present {
                heads.obj_ptr
            } else {
                self.no_obj_ptr.clone()
            },
            object_score: if present { 10.0 } else { -10.0 },
        })
    }

    /// `SAM2ImagePredictor._predict` on `image_embed` (`[1, C, g, g]`, features with
    /// `no_mem_embed`) for a batch of prompts already in SAM 2's packing (boxes as points 2, 3):
    /// logits `[B, M, 4g, 4g]`, IoU `[B, M]` and `M` (3 with `multimask`, else 1: the single
    /// mask, or the best multimask one when the single one is unstable). No object gate, as
    /// the image predictor.
    pub fn predict(
        &self,
        image_embed: Tensor<4>,
        high_res: &HighRes,
        prompts: &PromptBatch,
        multimask: bool,
    ) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        let (sparse, dense) = self.prompt_encoder.forward(prompts);
        let pe = self.prompt_encoder.dense_pe();
        let out = self
            .mask_decoder
            .forward(image_embed, pe, sparse, dense, high_res);
        let masks = to_vec(out.masks)?;
        let iou = to_vec(out.iou)?;
        let plane = masks.len() / iou.len();
        let (mut logits, mut ious) = (Vec::new(), Vec::new());
        for (m, q) in masks.chunks(4 * plane).zip(iou.chunks(4)) {
            for i in choose(m, q, plane, multimask) {
                logits.extend_from_slice(&m[i * plane..(i + 1) * plane]);
                ious.push(q[i]);
            }
        }
        Ok((logits, ious, if multimask { 3 } else { 1 }))
    }

    /// `_encode_new_memory`: the slice's (unconditioned) features and its chosen low-res
    /// logits → its memory. `from_points`: the key slice, whose mask is binarised.
    pub fn encode_memory(
        &self,
        f: &FrameFeatures,
        heads: &HeadsOut,
        from_points: bool,
    ) -> Result<SliceMemory> {
        let features = self.memory_features(f, heads, from_points);
        let [_, c, h, w] = features.dims();
        let rows = to_vec(features.reshape([1, c, h * w]))?;
        let rows = super::host::transpose(&rows, 1, c, h * w)
            .into_iter()
            .map(round_bf16)
            .collect();
        Ok(SliceMemory {
            features: Tensor::from_data(TensorData::new(rows, [1, h * w, c]), &self.device),
            obj_ptr: heads.obj_ptr.clone(),
        })
    }

    /// The memory features `[1, 64, g, g]` of [`Sam2::encode_memory`] before the bfloat16
    /// rounding.
    pub fn memory_features(
        &self,
        f: &FrameFeatures,
        heads: &HeadsOut,
        from_points: bool,
    ) -> Tensor<4> {
        let s = self.image_size;
        let low = (s / 4, s / 4);
        let high = bilinear_resize(&heads.low_res, low.0, low.1, s, s);
        let mask: Vec<f32> = high
            .iter()
            .map(|&v| {
                let p = if from_points {
                    f32::from(v > 0.0)
                } else {
                    sigmoid(v)
                };
                p * 20.0 - 10.0
            })
            .collect();
        let mask = Tensor::<4>::from_data(TensorData::new(mask, [1, 1, s, s]), &self.device);
        let features = self.memory_encoder.forward(f.vision.clone(), mask).features;
        if heads.object_score > 0.0 {
            features
        } else {
            features + self.no_obj_embed_spatial.clone()
        }
    }

    /// The tokens a slice attends to: `spatial` memories with their temporal slot (`t_pos`,
    /// 0 = the conditioning slice), then the object pointers with their signed distance.
    pub fn memory_tokens(
        &self,
        spatial: &[(usize, &Tensor<3>)],
        pointers: &[(i64, &Tensor<2>)],
        max_ptrs: usize,
    ) -> MemoryTokens {
        let mut tokens = Vec::new();
        let mut pos = Vec::new();
        for &(t_pos, m) in spatial {
            let slot = NUM_MASKMEM - t_pos - 1;
            let tpos = &self.maskmem_tpos_enc[slot * MEM..(slot + 1) * MEM];
            let tpos = Tensor::<1>::from_data(TensorData::new(tpos.to_vec(), [MEM]), &self.device);
            tokens.push((*m).clone());
            pos.push(self.maskmem_pos.clone() + tpos.reshape([1, 1, MEM]));
        }
        let n_ptr = pointers.len() * (HIDDEN / MEM);
        if !pointers.is_empty() {
            let t_max = (max_ptrs - 1).max(1) as f32;
            let rel: Vec<f32> = pointers.iter().map(|(d, _)| *d as f32 / t_max).collect();
            let sine = sine_1d(&rel, HIDDEN);
            let sine =
                Tensor::<2>::from_data(TensorData::new(sine, [rel.len(), HIDDEN]), &self.device);
            let tpos = self.obj_ptr_tpos_proj.forward(sine); // [P, 64]
            let split = HIDDEN / MEM;
            let ptrs: Vec<Tensor<2>> = pointers.iter().map(|(_, p)| (*p).clone()).collect();
            let ptrs = Tensor::cat(ptrs, 0).reshape([1, n_ptr, MEM]);
            let tpos = tpos
                .unsqueeze_dim::<3>(1)
                .repeat_dim(1, split)
                .reshape([1, n_ptr, MEM]);
            tokens.push(ptrs);
            pos.push(tpos);
        }
        MemoryTokens {
            tokens: Tensor::cat(tokens, 1),
            pos: Tensor::cat(pos, 1),
            num_obj_ptr_tokens: n_ptr,
        }
    }
}

/// A 4 × 4, stride-4 convolution of one `s × s` plane (`w`: 16 weights then the bias).
fn conv4x4_stride4(x: &[f32], s: usize, w: &[f32]) -> Vec<f32> {
    let o = s / 4;
    let mut out = vec![w[16]; o * o];
    for (i, row) in out.chunks_mut(o).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            for a in 0..4 {
                let line = &x[(4 * i + a) * s + 4 * j..];
                *v += (0..4).map(|b| w[a * 4 + b] * line[b]).sum::<f32>();
            }
        }
    }
    out
}

/// The decoder outputs one prompt keeps: the three multimask ones, or one by
/// [`stable_or_best`].
fn choose(masks: &[f32], iou: &[f32], plane: usize, multimask: bool) -> Vec<usize> {
    if multimask {
        vec![1, 2, 3]
    } else {
        vec![stable_or_best(masks, iou, plane)]
    }
}

/// `_dynamic_multimask_via_stability`: the single-mask output (index 0) when its stability
/// score (IoU of the masks at logits > 0.05 and > −0.05) is at least 0.98, else the
/// multimask output with the highest predicted IoU.
fn stable_or_best(masks: &[f32], iou: &[f32], plane: usize) -> usize {
    let single = &masks[..plane];
    let inner = single.iter().filter(|&&v| v > 0.05).count();
    let outer = single.iter().filter(|&&v| v > -0.05).count();
    let stability = if outer > 0 {
        inner as f32 / outer as f32
    } else {
        1.0
    };
    if stability >= 0.98 {
        0
    } else {
        1 + argmax(&iou[1..4])
    }
}

/// Index of the first maximum (`torch.argmax`).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `get_1d_sine_pe`: each position → `dim` values, sines then cosines of `pos / 10000^(2⌊k/2⌋/(dim/2))`.
fn sine_1d(positions: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let dim_t: Vec<f32> = (0..half)
        .map(|k| 10000f32.powf((2 * (k / 2)) as f32 / half as f32))
        .collect();
    let mut out = Vec::with_capacity(positions.len() * dim);
    for &p in positions {
        out.extend(dim_t.iter().map(|d| (p / d).sin()));
        out.extend(dim_t.iter().map(|d| (p / d).cos()));
    }
    out
}

/// `f32` → the nearest `bfloat16` (ties to even), back as `f32` (`tensor.to(torch.bfloat16)`).
fn round_bf16(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties go to the even one (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 lies halfway between 1.0078125 and 1.015625: to the even 1.015625.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.015625);
        assert_eq!(round_bf16(1.0 + 1.5 / 256.0), 1.0078125);
        assert_eq!(round_bf16(-(1.0 + 1.5 / 256.0)), -1.0078125);
    }

    #[test]
    fn stability_picks_the_single_mask_only_when_stable() {
        let plane = 4;
        // Single mask far from 0 (stable), multimask candidates with IoU 0.1, 0.9, 0.5.
        let mut masks = vec![5.0, 5.0, -5.0, -5.0];
        masks.extend([0.0; 12]);
        assert_eq!(stable_or_best(&masks, &[0.0, 0.1, 0.9, 0.5], plane), 0);
        // One logit inside ±0.05: inner 2, outer 3, stability 0.67 → best multimask (index 2).
        masks[2] = 0.0;
        assert_eq!(stable_or_best(&masks, &[0.0, 0.1, 0.9, 0.5], plane), 2);
    }

    #[test]
    fn sine_1d_matches_the_formula() {
        let pe = sine_1d(&[0.5], 8);
        assert_eq!(pe.len(), 8);
        assert!((pe[0] - 0.5f32.sin()).abs() < 1e-7);
        assert!((pe[2] - (0.5 / 10000f32.powf(0.5)).sin()).abs() < 1e-7);
        assert!((pe[4] - 0.5f32.cos()).abs() < 1e-7);
    }
}
