//! SAM 2's Hiera image trunk (`sam2/modeling/backbones/hieradet.py`), the first part of
//! MedSAM2's image encoder (issue #10): a 7×7/4 patch embedding, a windowed positional
//! embedding, and stages of multi-scale blocks (windowed or global attention, query pooling at
//! each stage change). Returns the feature map at the end of every stage.
//!
//! Layout inside the trunk is `[B, H, W, C]`, as upstream; the outputs are `[B, C, H, W]`.
//! The input side must be a multiple of 32 (four halvings after the stride-4 patch embedding,
//! and the window embedding tiles the grid in steps of its own size).

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor};

use super::common::{
    host_attention, pad_hw, window_partition, window_unpartition, Conv2d, HostBias, LayerNorm,
    Linear, Loader,
};
use super::kernels::Kernels;

/// Hiera's shape (`sam2/configs/sam2.1/sam2.1_hiera_*.yaml`, `image_encoder.trunk`).
#[derive(Debug, Clone, PartialEq)]
pub struct HieraConfig {
    /// Channels after the patch embedding (doubled at each stage change).
    pub embed_dim: usize,
    /// Heads in the first stage (doubled at each stage change).
    pub num_heads: usize,
    /// Blocks per stage.
    pub stages: Vec<usize>,
    /// Blocks with global attention (the others attend within windows).
    pub global_att_blocks: Vec<usize>,
    /// Window side per stage.
    pub window_spec: Vec<usize>,
    /// Stage changes with query pooling (the first `q_pool` of them).
    pub q_pool: usize,
    /// Size of the background positional embedding, interpolated to the grid.
    pub bkg_size: (usize, usize),
}

impl HieraConfig {
    /// Hiera-Tiny, as in SAM 2.1 and MedSAM2 (`sam2.1_hiera_t.yaml`).
    pub fn tiny() -> Self {
        Self {
            embed_dim: 96,
            num_heads: 1,
            stages: vec![1, 2, 7, 2],
            global_att_blocks: vec![5, 7, 9],
            window_spec: vec![8, 4, 14, 7],
            q_pool: 3,
            bkg_size: (7, 7),
        }
    }

    /// Index of the last block of each stage.
    fn stage_ends(&self) -> Vec<usize> {
        self.stages
            .iter()
            .scan(0, |n, s| {
                *n += s;
                Some(*n - 1)
            })
            .collect()
    }
}

/// Max over 2×2 blocks of `[B, H, W, C]` (`nn.MaxPool2d(2, 2)`, odd edges dropped).
fn max_pool2(x: Tensor<4>) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.slice([0..b, 0..h2 * 2, 0..w2 * 2, 0..c])
    } else {
        x
    };
    x.reshape([b, h2, 2, w2, 2, c])
        .max_dim(4)
        .max_dim(2)
        .reshape([b, h2, w2, c])
}

/// `MultiScaleAttention`: attention over all positions of `[B, H, W, C]`, the queries
/// max-pooled 2×2 first at a stage change.
#[derive(Debug, Clone)]
struct MultiScaleAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
    q_pool: bool,
    kernels: Kernels,
}

impl MultiScaleAttention {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, _] = x.dims();
        let dim_out = self.proj.weight.dims()[1];
        let hd = dim_out / self.heads;
        let qkv = self.qkv.forward(x).reshape([b, h * w, 3, self.heads, hd]);
        let part = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..h * w, i..i + 1, 0..self.heads, 0..hd])
                .reshape([b, h * w, self.heads, hd])
        };
        let (mut q, k, v) = (part(0), part(1), part(2));
        let (mut h, mut w) = (h, w);
        if self.q_pool {
            let pooled = max_pool2(q.reshape([b, h, w, dim_out]));
            [_, h, w, _] = pooled.dims();
            q = pooled.reshape([b, h * w, self.heads, hd]);
        }
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        let out = if self.kernels == Kernels::Host && q.dtype() == DType::F32 {
            let q = q * (hd as f64).powf(-0.5);
            host_attention(q, k, v, HostBias::None, self.qkv.products())
        } else {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        };
        self.proj
            .forward(out.swap_dims(1, 2).reshape([b, h, w, dim_out]))
    }
}

/// `MultiScaleBlock`.
#[derive(Debug, Clone)]
struct MultiScaleBlock {
    norm1: LayerNorm,
    attn: MultiScaleAttention,
    norm2: LayerNorm,
    mlp: [Linear; 2],
    /// The shortcut's projection where the width changes.
    proj: Option<Linear>,
    window_size: usize,
    kernels: Kernels,
}

impl MultiScaleBlock {
    #[allow(clippy::too_many_arguments)]
    fn load(
        l: &mut Loader,
        p: &str,
        dim: usize,
        dim_out: usize,
        heads: usize,
        q_pool: bool,
        window_size: usize,
    ) -> Self {
        Self {
            norm1: LayerNorm::load(l, &format!("{p}.norm1"), dim, 1e-6),
            attn: MultiScaleAttention {
                qkv: Linear::load(l, &format!("{p}.attn.qkv"), dim, 3 * dim_out, true),
                proj: Linear::load(l, &format!("{p}.attn.proj"), dim_out, dim_out, true),
                heads,
                q_pool,
                kernels: l.kernels,
            },
            norm2: LayerNorm::load(l, &format!("{p}.norm2"), dim_out, 1e-6),
            mlp: [
                Linear::load(l, &format!("{p}.mlp.layers.0"), dim_out, 4 * dim_out, true),
                Linear::load(l, &format!("{p}.mlp.layers.1"), 4 * dim_out, dim_out, true),
            ],
            proj: (dim != dim_out)
                .then(|| Linear::load(l, &format!("{p}.proj"), dim, dim_out, true)),
            window_size,
            kernels: l.kernels,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let xn = self.norm1.forward(x.clone());
        let shortcut = match &self.proj {
            Some(proj) if self.attn.q_pool => max_pool2(proj.forward(xn.clone())),
            Some(proj) => proj.forward(xn.clone()),
            None if self.attn.q_pool => max_pool2(x),
            None => x,
        };
        let y = if self.window_size > 0 {
            let [b, h, w, _] = xn.dims();
            let ws = self.window_size;
            let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
            let y = self.attn.forward(window_partition(pad_hw(xn, ph, pw), ws));
            // After query pooling the windows, the padded grid and the image are halved.
            let s = if self.attn.q_pool { 2 } else { 1 };
            let [_, ho, wo, _] = shortcut.dims();
            let y = window_unpartition(y, ws / s, b, (h + ph) / s, (w + pw) / s);
            let c = y.dims()[3];
            y.slice([0..b, 0..ho, 0..wo, 0..c])
        } else {
            self.attn.forward(xn)
        };
        let x = self.kernels.add(shortcut, y);
        let hidden = self
            .kernels
            .gelu(self.mlp[0].forward(self.norm2.forward(x.clone())));
        self.kernels.add(x, self.mlp[1].forward(hidden))
    }
}

/// The Hiera trunk.
#[derive(Debug, Clone)]
pub struct Hiera {
    patch_embed: Conv2d,
    /// `[C, bh, bw]`, interpolated (bicubic) to the grid.
    pos_embed: Vec<f32>,
    /// `[C, ws, ws]`, tiled over the grid.
    pos_embed_window: Vec<f32>,
    blocks: Vec<MultiScaleBlock>,
    stage_ends: Vec<usize>,
    config: HieraConfig,
}

impl Hiera {
    /// The trunk under `p` (`image_encoder.trunk`) with shape `config`.
    pub fn load(l: &mut Loader, p: &str, config: &HieraConfig) -> Self {
        let c0 = config.embed_dim;
        let (bh, bw) = config.bkg_size;
        let ws0 = config.window_spec[0];
        let stage_ends = config.stage_ends();
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .take(config.q_pool)
            .map(|e| e + 1)
            .collect();
        let (mut dim, mut heads, mut stage) = (c0, config.num_heads, 0);
        let mut blocks = Vec::new();
        for i in 0..config.stages.iter().sum() {
            // The window lags a block: a stage's first block keeps the previous stage's.
            let global = config.global_att_blocks.contains(&i);
            let window = if global { 0 } else { config.window_spec[stage] };
            let mut dim_out = dim;
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = dim * 2;
                heads *= 2;
                stage += 1;
            }
            let q_pool = q_pool_blocks.contains(&i);
            let b = format!("{p}.blocks.{i}");
            blocks.push(MultiScaleBlock::load(
                l, &b, dim, dim_out, heads, q_pool, window,
            ));
            dim = dim_out;
        }
        Self {
            patch_embed: Conv2d::load(l, &format!("{p}.patch_embed.proj"), 3, c0, 7, 4, 3, true),
            pos_embed: l.values(&format!("{p}.pos_embed"), &[1, c0, bh, bw]),
            pos_embed_window: l.values(&format!("{p}.pos_embed_window"), &[1, c0, ws0, ws0]),
            blocks,
            stage_ends,
            config: config.clone(),
        }
    }

    /// `_get_pos_embed`: the background embedding resized (bicubic) to `(h, w)` plus the
    /// window embedding tiled over it, `[1, h, w, C]`.
    fn pos_embed(&self, h: usize, w: usize, device: &burn::tensor::Device) -> Tensor<4> {
        let c = self.config.embed_dim;
        let (bh, bw) = self.config.bkg_size;
        let ws = self.config.window_spec[0];
        let mut out = vec![0.0f32; h * w * c];
        for ch in 0..c {
            let plane = &self.pos_embed[ch * bh * bw..(ch + 1) * bh * bw];
            let resized = bicubic(plane, (bh, bw), (h, w));
            let window = &self.pos_embed_window[ch * ws * ws..(ch + 1) * ws * ws];
            for y in 0..h {
                for x in 0..w {
                    let v = resized[y * w + x] + window[(y % ws) * ws + x % ws];
                    out[(y * w + x) * c + ch] = v;
                }
            }
        }
        Tensor::from_data(burn::tensor::TensorData::new(out, [1, h, w, c]), device)
    }

    /// Its linear layers (what `Precision::Bf16` switches to the bf16 kernel).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = Vec::new();
        for b in &mut self.blocks {
            let [mlp0, mlp1] = &mut b.mlp;
            out.extend([&mut b.attn.qkv, &mut b.attn.proj, mlp0, mlp1]);
            out.extend(b.proj.as_mut());
        }
        out
    }

    /// `[B, 3, S, S]` (S a multiple of 32) → the feature map at the end of each stage,
    /// `[B, C_i, S / 4 / 2^i, S / 4 / 2^i]`, finest first.
    pub fn forward(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let x = self.patch_embed.forward(x).permute([0, 2, 3, 1]);
        let [_, h, w, _] = x.dims();
        let mut x = x + self.pos_embed(h, w, &self.patch_embed.weight.device());
        let mut outputs = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if self.stage_ends.contains(&i) {
                outputs.push(x.clone().permute([0, 3, 1, 2]));
            }
        }
        outputs
    }
}

/// PyTorch's cubic convolution weights (A = −0.75) for the four taps around `t` ∈ [0, 1).
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `F.interpolate(mode="bicubic", align_corners=False)` of one `src` plane to `dst` size:
/// source coordinate `(o + ½)·in/out − ½`, taps clamped at the edges, rows then columns.
fn bicubic(src: &[f32], (ih, iw): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let taps = |o: usize, n_in: usize, n_out: usize| {
        let real = (n_in as f32 / n_out as f32) * (o as f32 + 0.5) - 0.5;
        let i0 = real.floor();
        let idx = |k: i64| (i0 as i64 + k).clamp(0, n_in as i64 - 1) as usize;
        ([idx(-1), idx(0), idx(1), idx(2)], cubic_weights(real - i0))
    };
    let mut out = vec![0.0f32; oh * ow];
    for oy in 0..oh {
        let (ys, wy) = taps(oy, ih, oh);
        for ox in 0..ow {
            let (xs, wx) = taps(ox, iw, ow);
            let row = |y: usize| (0..4).map(|k| src[y * iw + xs[k]] * wx[k]).sum::<f32>();
            out[oy * ow + ox] = (0..4).map(|k| row(ys[k]) * wy[k]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_keeps_a_plane_of_its_own_size_and_constants() {
        let src: Vec<f32> = (0..49).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(bicubic(&src, (7, 7), (7, 7)), src);
        let flat = vec![2.5f32; 49];
        for v in bicubic(&flat, (7, 7), (128, 128)) {
            assert!((v - 2.5).abs() < 1e-5, "{v}");
        }
    }

    #[test]
    fn tiny_has_the_official_stage_ends() {
        assert_eq!(HieraConfig::tiny().stage_ends(), vec![0, 2, 9, 11]);
    }
}
