//! SAM 2's `MaskDecoder` (`sam2/modeling/sam/mask_decoder.py`): SAM's two-way transformer and
//! hypernetwork heads, plus an object-score token and head, a sigmoid on the IoU head, and the
//! high-resolution skips (`conv_s0`, `conv_s1`) added into the output upscaling.

use burn::tensor::activation::sigmoid;
use burn::tensor::Tensor;

use super::common::{Conv2d, ConvTranspose2x2, LayerNorm2d, Loader};
use super::kernels::Kernels;
use super::mask_decoder::Mlp;
use super::transformer::TwoWayTransformer;

/// Everything one decoder run gives, before the single/multi-mask choice.
#[derive(Debug, Clone)]
pub struct Sam2DecoderOut {
    /// `[B, 4, 4h, 4w]` mask logits: index 0 the single-mask output, 1..4 the multimask ones.
    pub masks: Tensor<4>,
    /// `[B, 4]` predicted IoU (after the sigmoid).
    pub iou: Tensor<2>,
    /// `[B, 4, C]` the mask tokens after the transformer (the object pointers come from them).
    pub mask_tokens: Tensor<3>,
    /// `[B, 1]` object-score logits (> 0: the object is present).
    pub object_score: Tensor<2>,
}

/// The high-resolution skips of one image: `backbone_fpn[0]` and `[1]` after `conv_s0` and
/// `conv_s1` (`[B, C/8, 4h, 4w]` and `[B, C/4, 2h, 2w]`).
#[derive(Debug, Clone)]
pub struct HighRes {
    /// `conv_s0(backbone_fpn[0])`.
    pub s0: Tensor<4>,
    /// `conv_s1(backbone_fpn[1])`.
    pub s1: Tensor<4>,
}

/// SAM 2's `MaskDecoder` with the options of SAM 2.1 (high-res features, object scores by an
/// MLP, sigmoid IoU).
#[derive(Debug, Clone)]
pub struct Sam2MaskDecoder {
    transformer: TwoWayTransformer,
    /// `[2 + num_mask_tokens, C]`: the object-score token, the IoU token, the mask tokens.
    output_tokens: Tensor<2>,
    up1: ConvTranspose2x2,
    up_ln: LayerNorm2d,
    up2: ConvTranspose2x2,
    conv_s0: Conv2d,
    conv_s1: Conv2d,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    obj_score_head: Mlp,
    num_mask_tokens: usize,
    kernels: Kernels,
}

impl Sam2MaskDecoder {
    /// The decoder under `p` (`sam_mask_decoder`), `dim` (256) wide, 3 multimask outputs.
    pub fn load(l: &mut Loader, p: &str, dim: usize) -> Self {
        let nm = 4;
        let mut tokens = l.values(&format!("{p}.obj_score_token.weight"), &[1, dim]);
        tokens.extend(l.values(&format!("{p}.iou_token.weight"), &[1, dim]));
        tokens.extend(l.values(&format!("{p}.mask_tokens.weight"), &[nm, dim]));
        let transformer =
            TwoWayTransformer::load_sam2(l, &format!("{p}.transformer"), 2, dim, 8, 2048);
        let conv = |l: &mut Loader, name: &str, c_out| {
            Conv2d::load(l, &format!("{p}.{name}"), dim, c_out, 1, 1, 0, true)
        };
        Self {
            transformer,
            output_tokens: l.from_vec(tokens, [2 + nm, dim]),
            up1: ConvTranspose2x2::load(l, &format!("{p}.output_upscaling.0"), dim, dim / 4),
            up_ln: LayerNorm2d::load(l, &format!("{p}.output_upscaling.1"), dim / 4),
            up2: ConvTranspose2x2::load(l, &format!("{p}.output_upscaling.3"), dim / 4, dim / 8),
            conv_s0: conv(l, "conv_s0", dim / 8),
            conv_s1: conv(l, "conv_s1", dim / 4),
            hypernetworks: (0..nm)
                .map(|i| {
                    let name = format!("{p}.output_hypernetworks_mlps.{i}");
                    Mlp::load(l, &name, &[dim, dim, dim, dim / 8])
                })
                .collect(),
            iou_head: Mlp::load(l, &format!("{p}.iou_prediction_head"), &[dim, 256, 256, nm]),
            obj_score_head: Mlp::load(l, &format!("{p}.pred_obj_score_head"), &[dim, dim, dim, 1]),
            num_mask_tokens: nm,
            kernels: l.kernels,
        }
    }

    /// `forward_image`'s projections of the two finest neck levels.
    pub fn high_res(&self, fpn0: Tensor<4>, fpn1: Tensor<4>) -> HighRes {
        HighRes {
            s0: self.conv_s0.forward(fpn0),
            s1: self.conv_s1.forward(fpn1),
        }
    }

    /// `predict_masks`: image `[B, C, h, w]`, image_pe `[1, C, h, w]`, sparse `[B, T, C]`,
    /// dense `[B, C, h, w]` and the image's high-res skips → [`Sam2DecoderOut`].
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        high_res: &HighRes,
    ) -> Sam2DecoderOut {
        let [b, _, c] = sparse.dims();
        let [_, _, h, w] = image.dims();
        let nm = self.num_mask_tokens;
        let out_tokens = self
            .output_tokens
            .clone()
            .unsqueeze::<3>()
            .expand([b, 2 + nm, c]);
        let tokens = Tensor::cat(vec![out_tokens, sparse], 1);
        let pos = image_pe.expand([b, c, h, w]);
        let image = image.expand([b, c, h, w]); // `repeat_image` for a batch of prompts
        let (hs, src) = self.transformer.forward(image + dense, pos, tokens);
        let token = |i: usize| hs.clone().slice([0..b, i..i + 1, 0..c]).reshape([b, c]);
        let k = self.kernels;
        let src = k.transpose12(src).reshape([b, c, h, w]);
        let up = self.up1.forward(src);
        let up = up.clone() + high_res.s1.clone().expand(up.dims());
        let up = self.up2.forward(k.gelu(self.up_ln.forward(up)));
        let up = k.gelu(up.clone() + high_res.s0.clone().expand(up.dims())); // [B, C/8, 4h, 4w]
        let [_, cu, hu, wu] = up.dims();
        let hyper: Vec<Tensor<2>> = (0..nm)
            .map(|i| self.hypernetworks[i].forward(token(2 + i)))
            .collect();
        let masks = Tensor::stack::<3>(hyper, 1)
            .matmul(up.reshape([b, cu, hu * wu]))
            .reshape([b, nm, hu, wu]);
        Sam2DecoderOut {
            masks,
            iou: sigmoid(self.iou_head.forward(token(1))),
            mask_tokens: hs.clone().slice([0..b, 2..2 + nm, 0..c]),
            object_score: self.obj_score_head.forward(token(0)),
        }
    }
}
