//! SAM 2's `MemoryEncoder` (`sam2/modeling/memory_encoder.py`): a slice's mask (already
//! through the sigmoid, scaled and shifted) downsampled to the feature grid, added to the
//! projected image features, fused by two ConvNeXt blocks and projected to the memory width,
//! with a sine positional encoding.

use burn::tensor::{Tensor, TensorData};

use super::common::{Conv2d, LayerNorm2d, Linear, Loader};
use super::kernels::Kernels;
use super::position_encoding;

/// `MaskDownSampler`: four 3×3 stride-2 convolutions (1 → 4 → 16 → 64 → 256 channels), each
/// followed by `LayerNorm2d` and GELU, then a 1×1 convolution to the embedding width.
#[derive(Debug, Clone)]
struct MaskDownSampler {
    stages: Vec<(Conv2d, LayerNorm2d)>,
    out: Conv2d,
    kernels: Kernels,
}

impl MaskDownSampler {
    fn load(l: &mut Loader, p: &str, embed_dim: usize) -> Self {
        let mut c_in = 1;
        let stages = (0..4)
            .map(|i| {
                let c_out = c_in * 4;
                let conv = Conv2d::load(
                    l,
                    &format!("{p}.encoder.{}", 3 * i),
                    c_in,
                    c_out,
                    3,
                    2,
                    1,
                    true,
                );
                let norm = LayerNorm2d::load(l, &format!("{p}.encoder.{}", 3 * i + 1), c_out);
                c_in = c_out;
                (conv, norm)
            })
            .collect();
        let out = Conv2d::load(
            l,
            &format!("{p}.encoder.12"),
            c_in,
            embed_dim,
            1,
            1,
            0,
            true,
        );
        Self {
            stages,
            out,
            kernels: l.kernels,
        }
    }

    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for (conv, norm) in &self.stages {
            x = self.kernels.gelu(norm.forward(conv.forward(x)));
        }
        self.out.forward(x)
    }
}

/// `CXBlock`: depthwise 7×7, `LayerNorm2d`, pointwise MLP (×4, GELU), layer scale, residual.
#[derive(Debug, Clone)]
struct CxBlock {
    dwconv: Conv2d,
    norm: LayerNorm2d,
    pwconv1: Linear,
    pwconv2: Linear,
    /// `[1, 1, C]`, the layer scale.
    gamma: Tensor<3>,
    kernels: Kernels,
}

impl CxBlock {
    fn load(l: &mut Loader, p: &str, dim: usize) -> Self {
        Self {
            dwconv: Conv2d::load_depthwise(l, &format!("{p}.dwconv"), dim, 7, 3),
            norm: LayerNorm2d::load(l, &format!("{p}.norm"), dim),
            pwconv1: Linear::load(l, &format!("{p}.pwconv1"), dim, 4 * dim, true),
            pwconv2: Linear::load(l, &format!("{p}.pwconv2"), 4 * dim, dim, true),
            gamma: l.tensor(&format!("{p}.gamma"), [dim]).reshape([1, 1, dim]),
            kernels: l.kernels,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let y = self.norm.forward(self.dwconv.forward(x.clone()));
        let y = self.kernels.transpose12(y.reshape([b, c, h * w])); // [B, HW, C]
        let y = self
            .pwconv2
            .forward(self.kernels.gelu(self.pwconv1.forward(y)))
            * self.gamma.clone();
        x + self.kernels.transpose12(y).reshape([b, c, h, w])
    }
}

/// A slice's memory: features `[B, out_dim, h, w]` and their positional encoding.
#[derive(Debug, Clone)]
pub struct MemoryOut {
    /// `vision_features`.
    pub features: Tensor<4>,
    /// `vision_pos_enc[0]`, the same for every slice.
    pub pos: Tensor<4>,
}

/// SAM 2's `MemoryEncoder` (SAM 2.1 Tiny: 256 in, 64 out, two fuser blocks).
#[derive(Debug, Clone)]
pub struct MemoryEncoder {
    mask_downsampler: MaskDownSampler,
    pix_feat_proj: Conv2d,
    fuser: Vec<CxBlock>,
    out_proj: Conv2d,
    out_dim: usize,
}

impl MemoryEncoder {
    /// The encoder under `p` (`memory_encoder`): `in_dim` (256) image channels, `out_dim`
    /// (64) memory channels.
    pub fn load(l: &mut Loader, p: &str, in_dim: usize, out_dim: usize) -> Self {
        Self {
            mask_downsampler: MaskDownSampler::load(l, &format!("{p}.mask_downsampler"), in_dim),
            pix_feat_proj: Conv2d::load(
                l,
                &format!("{p}.pix_feat_proj"),
                in_dim,
                in_dim,
                1,
                1,
                0,
                true,
            ),
            fuser: (0..2)
                .map(|i| CxBlock::load(l, &format!("{p}.fuser.layers.{i}"), in_dim))
                .collect(),
            out_proj: Conv2d::load(l, &format!("{p}.out_proj"), in_dim, out_dim, 1, 1, 0, true),
            out_dim,
        }
    }

    /// Image features `[B, C, h, w]` and the mask as the memory sees it (`[B, 1, 16h, 16w]`,
    /// sigmoid, scale and bias already applied: `skip_mask_sigmoid=True`) → the memory.
    pub fn forward(&self, pix_feat: Tensor<4>, mask: Tensor<4>) -> MemoryOut {
        let mut x = self.pix_feat_proj.forward(pix_feat) + self.mask_downsampler.forward(mask);
        for block in &self.fuser {
            x = block.forward(x);
        }
        let features = self.out_proj.forward(x);
        let [b, c, h, w] = features.dims();
        let pe = position_encoding::sine(self.out_dim, h, w);
        let pos = Tensor::<4>::from_data(TensorData::new(pe, [1, c, h, w]), &features.device());
        MemoryOut {
            features,
            pos: pos.expand([b, c, h, w]),
        }
    }
}
