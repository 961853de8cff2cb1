//! SAM's `MaskDecoder`: two-way transformer, upscaling and hypernetwork heads, IoU head.

use burn::tensor::activation::relu;
use burn::tensor::Tensor;

use super::common::{ConvTranspose2x2, LayerNorm2d, Linear, Loader};
use super::kernels::Kernels;
use super::transformer::{ImageSide, TwoWayTransformer};

/// SAM's `MLP`: ReLU between layers, none after the last.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Layers `{p}.layers.{i}` from `dims[i]` to `dims[i + 1]`.
    pub(crate) fn load(l: &mut Loader, p: &str, dims: &[usize]) -> Self {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| Linear::load(l, &format!("{p}.layers.{i}"), d[0], d[1], true))
            .collect();
        Self { layers }
    }

    pub(crate) fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// SAM's `MaskDecoder`.
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    transformer: TwoWayTransformer,
    /// `[1 + num_mask_tokens, C]`: the IoU token then the mask tokens.
    output_tokens: Tensor<2>,
    up1: ConvTranspose2x2,
    up_ln: LayerNorm2d,
    up2: ConvTranspose2x2,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    /// Mask tokens: the single-mask output and the three multimask ones.
    pub num_mask_tokens: usize,
    kernels: Kernels,
}

impl MaskDecoder {
    /// The decoder under `p` with `dim` channels and `num_multimask_outputs` (3).
    pub fn load(l: &mut Loader, p: &str, dim: usize, num_multimask_outputs: usize) -> Self {
        let nm = num_multimask_outputs + 1;
        let mut tokens = l.values(&format!("{p}.iou_token.weight"), &[1, dim]);
        tokens.extend(l.values(&format!("{p}.mask_tokens.weight"), &[nm, dim]));
        Self {
            transformer: TwoWayTransformer::load(l, &format!("{p}.transformer"), 2, dim, 8, 2048),
            output_tokens: l.from_vec(tokens, [1 + nm, dim]),
            up1: ConvTranspose2x2::load(l, &format!("{p}.output_upscaling.0"), dim, dim / 4),
            up_ln: LayerNorm2d::load(l, &format!("{p}.output_upscaling.1"), dim / 4),
            up2: ConvTranspose2x2::load(l, &format!("{p}.output_upscaling.3"), dim / 4, dim / 8),
            hypernetworks: (0..nm)
                .map(|i| {
                    Mlp::load(
                        l,
                        &format!("{p}.output_hypernetworks_mlps.{i}"),
                        &[dim, dim, dim, dim / 8],
                    )
                })
                .collect(),
            iou_head: Mlp::load(l, &format!("{p}.iou_prediction_head"), &[dim, 256, 256, nm]),
            num_mask_tokens: nm,
            kernels: l.kernels,
        }
    }

    /// The prompt-independent start of the decoder: image embedding `[b, C, h, w]` plus the
    /// dense prompt embedding `[b, C, h, w]`, with image_pe `[1, C, h, w]` (`b` is 1 when one
    /// side serves every prompt of a batch).
    pub fn prepare(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        dense: Tensor<4>,
    ) -> ImageSide {
        let [b, c, h, w] = dense.dims();
        let src = if image_embeddings.dims()[0] != b {
            image_embeddings.expand([b, c, h, w])
        } else {
            image_embeddings
        };
        let pos = if image_pe.dims()[0] != b {
            image_pe.expand([b, c, h, w])
        } else {
            image_pe
        };
        self.transformer.prepare(src + dense, pos)
    }

    /// image embedding `[1 or B, C, h, w]`, image_pe `[1, C, h, w]`, sparse `[B, T, C]`,
    /// dense `[B, C, h, w]` → all masks `[B, 4, 4h, 4w]` and IoU predictions `[B, 4]`
    /// (index 0 is the single-mask output, 1.. the multimask outputs).
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
    ) -> (Tensor<4>, Tensor<2>) {
        let side = self.prepare(image_embeddings, image_pe, dense);
        self.forward_prepared(&side, sparse)
    }

    /// A prepared image side (batch 1 or `B`) and sparse `[B, T, C]` → the outputs of
    /// [`MaskDecoder::forward`].
    pub fn forward_prepared(&self, side: &ImageSide, sparse: Tensor<3>) -> (Tensor<4>, Tensor<2>) {
        let [b, _, c] = sparse.dims();
        let (h, w) = side.grid;
        let nm = self.num_mask_tokens;
        let out_tokens = self
            .output_tokens
            .clone()
            .unsqueeze::<3>()
            .expand([b, 1 + nm, c]);
        let tokens = Tensor::cat(vec![out_tokens, sparse], 1);
        let (hs, src) = self.transformer.forward_prepared(side, tokens);
        let iou_token_out = hs.clone().slice([0..b, 0..1, 0..c]).reshape([b, c]);
        let k = self.kernels;
        let src = k.transpose12(src).reshape([b, c, h, w]);
        let up = k.gelu(self.up_ln.forward(self.up1.forward(src)));
        let up = k.gelu(self.up2.forward(up)); // [B, C/8, 4h, 4w]
        let [_, cu, hu, wu] = up.dims();
        let hyper: Vec<Tensor<2>> = (0..nm)
            .map(|i| {
                let tok = hs.clone().slice([0..b, 1 + i..2 + i, 0..c]).reshape([b, c]);
                self.hypernetworks[i].forward(tok)
            })
            .collect();
        let hyper_in = Tensor::stack::<3>(hyper, 1); // [B, nm, C/8]
        let masks = hyper_in
            .matmul(up.reshape([b, cu, hu * wu]))
            .reshape([b, nm, hu, wu]);
        let iou = self.iou_head.forward(iou_token_out);
        (masks, iou)
    }
}
