//! TinyViT image encoder, LiteMedSAM's configuration (MobileSAM's TinyViT-5M with MedSAM's
//! 1×1 stride-1 patch embedding).
//!
//! `[B, 3, 256, 256]` → `[B, 256, 64, 64]`. Stages at 256², 128², 64², 64²; BatchNorm is
//! folded into the convolutions at load; the window attention's padded tokens are not masked
//! (they pass through the pre-attention LayerNorm and take part in attention, as upstream).

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor};

use super::common::{
    conv2d_bn, host_attention, pad_hw, window_partition, window_unpartition, Conv2d, HostBias,
    LayerNorm, LayerNorm2d, Linear, Loader,
};
use super::kernels::Kernels;

/// TinyViT hyper-parameters.
#[derive(Debug, Clone)]
pub struct TinyViTConfig {
    /// Input side (256).
    pub img_size: usize,
    /// Channels per stage.
    pub embed_dims: [usize; 4],
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Attention heads per stage (stage 0 is convolutional).
    pub num_heads: [usize; 4],
    /// Attention window side per stage.
    pub window_sizes: [usize; 4],
    /// MLP width over block width.
    pub mlp_ratio: usize,
    /// MBConv expansion in stage 0.
    pub mbconv_expand_ratio: usize,
}

impl TinyViTConfig {
    /// LiteMedSAM's TinyViT.
    pub fn lite_medsam() -> Self {
        Self {
            img_size: 256,
            embed_dims: [64, 128, 160, 320],
            depths: [2, 2, 6, 2],
            num_heads: [2, 4, 5, 10],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
        }
    }
}

#[derive(Debug, Clone)]
struct MBConv {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    kernels: Kernels,
}

impl MBConv {
    fn load(l: &mut Loader, p: &str, dim: usize, hidden: usize) -> Self {
        Self {
            conv1: conv2d_bn(l, &format!("{p}.conv1"), [dim, hidden], 1, 1, 1),
            conv2: conv2d_bn(l, &format!("{p}.conv2"), [hidden, hidden], 3, 1, hidden),
            conv3: conv2d_bn(l, &format!("{p}.conv3"), [hidden, dim], 1, 1, 1),
            kernels: l.kernels,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.kernels;
        let y = k.gelu(self.conv1.forward(x.clone()));
        let y = k.gelu(self.conv2.forward(y));
        k.add_gelu(self.conv3.forward(y), x)
    }
}

/// conv 1×1 → GELU → depthwise 3×3 (stride 2, or 1 into 320/448/576 channels) → GELU → conv 1×1.
#[derive(Debug, Clone)]
struct PatchMerging {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    kernels: Kernels,
}

impl PatchMerging {
    fn load(l: &mut Loader, p: &str, dim: usize, out: usize) -> Self {
        let stride = if matches!(out, 320 | 448 | 576) { 1 } else { 2 };
        Self {
            conv1: conv2d_bn(l, &format!("{p}.conv1"), [dim, out], 1, 1, 1),
            conv2: conv2d_bn(l, &format!("{p}.conv2"), [out, out], 3, stride, out),
            conv3: conv2d_bn(l, &format!("{p}.conv3"), [out, out], 1, 1, 1),
            kernels: l.kernels,
        }
    }

    /// `[B, C, H, W]` → `[B, C', H', W']`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.kernels.gelu(self.conv1.forward(x));
        let x = self.kernels.gelu(self.conv2.forward(x));
        self.conv3.forward(x)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `[1, heads, N, N]`: `attention_biases[:, attention_bias_idxs]`.
    bias: Tensor<4>,
    /// The same on the host, for the CPU backend's attention (empty on other devices).
    bias_host: Vec<f32>,
    num_heads: usize,
    key_dim: usize,
    kernels: Kernels,
}

/// LeViT's offset table: `(|Δy|, |Δx|)` numbered in first-seen order over
/// `product(range(ws), range(ws))` × the same.
fn attention_bias_idxs(ws: usize) -> (Vec<usize>, usize) {
    let points: Vec<(usize, usize)> = (0..ws).flat_map(|y| (0..ws).map(move |x| (y, x))).collect();
    let mut offsets: Vec<(usize, usize)> = Vec::new();
    let mut idxs = Vec::with_capacity(points.len() * points.len());
    for p1 in &points {
        for p2 in &points {
            let off = (p1.0.abs_diff(p2.0), p1.1.abs_diff(p2.1));
            let i = match offsets.iter().position(|o| *o == off) {
                Some(i) => i,
                None => {
                    offsets.push(off);
                    offsets.len() - 1
                }
            };
            idxs.push(i);
        }
    }
    (idxs, offsets.len())
}

impl Attention {
    fn load(l: &mut Loader, p: &str, dim: usize, heads: usize, ws: usize) -> Self {
        let kd = dim / heads;
        let (idxs, n_off) = attention_bias_idxs(ws);
        let ab = l.values(&format!("{p}.attention_biases"), &[heads, n_off]);
        let n = ws * ws;
        let mut bias = Vec::with_capacity(heads * n * n);
        for h in 0..heads {
            bias.extend(idxs.iter().map(|&i| ab[h * n_off + i]));
        }
        Self {
            norm: LayerNorm::load(l, &format!("{p}.norm"), dim, 1e-5),
            qkv: Linear::load(l, &format!("{p}.qkv"), dim, 3 * dim, true),
            proj: Linear::load(l, &format!("{p}.proj"), dim, dim, true),
            bias_host: match l.kernels {
                Kernels::Host => bias.clone(),
                Kernels::Burn => Vec::new(),
            },
            bias: l.from_vec(bias, [1, heads, n, n]),
            num_heads: heads,
            key_dim: kd,
            kernels: l.kernels,
        }
    }

    /// `[B, N, C]` → `[B, N, C]`.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let (nh, kd) = (self.num_heads, self.key_dim);
        // q, k, v are interleaved per head: view(B, N, heads, -1).split([kd, kd, d]).
        let qkv = self
            .qkv
            .forward(self.norm.forward(x))
            .reshape([b, n, nh, 3 * kd])
            .swap_dims(1, 2); // [B, heads, N, 3kd]
        let q = qkv.clone().slice([0..b, 0..nh, 0..n, 0..kd]);
        let k = qkv.clone().slice([0..b, 0..nh, 0..n, kd..2 * kd]);
        let v = qkv.slice([0..b, 0..nh, 0..n, 2 * kd..3 * kd]);
        let out = if self.kernels == Kernels::Host && q.dtype() == DType::F32 {
            let q = q * (kd as f64).powf(-0.5);
            let bias = HostBias::Table(&self.bias_host);
            host_attention(q, k, v, bias, self.qkv.products())
        } else {
            let bias = self.bias.clone().expand([b, nh, n, n]);
            attention(q, k, v, None, Some(bias), AttentionModuleOptions::default())
        };
        self.proj.forward(out.swap_dims(1, 2).reshape([b, n, c]))
    }
}

#[derive(Debug, Clone)]
struct TinyViTBlock {
    attn: Attention,
    local_conv: Conv2d,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window_size: usize,
    kernels: Kernels,
}

impl TinyViTBlock {
    fn load(l: &mut Loader, p: &str, dim: usize, heads: usize, ws: usize, mlp: usize) -> Self {
        Self {
            attn: Attention::load(l, &format!("{p}.attn"), dim, heads, ws),
            local_conv: conv2d_bn(l, &format!("{p}.local_conv"), [dim, dim], 3, 1, dim),
            mlp_norm: LayerNorm::load(l, &format!("{p}.mlp.norm"), dim, 1e-5),
            fc1: Linear::load(l, &format!("{p}.mlp.fc1"), dim, dim * mlp, true),
            fc2: Linear::load(l, &format!("{p}.mlp.fc2"), dim * mlp, dim, true),
            window_size: ws,
            kernels: l.kernels,
        }
    }

    /// `[B, L, C]` at resolution `h × w` → same.
    fn forward(&self, x: Tensor<3>, h: usize, w: usize) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let ws = self.window_size;
        let res = x.clone();
        let x = if h == ws && w == ws {
            self.attn.forward(x)
        } else {
            let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
            let xw = window_partition(pad_hw(x.reshape([b, h, w, c]), ph, pw), ws);
            let nw = xw.dims()[0];
            let y = self.attn.forward(xw.reshape([nw, ws * ws, c]));
            let y = window_unpartition(y.reshape([nw, ws, ws, c]), ws, b, h + ph, w + pw);
            y.slice([0..b, 0..h, 0..w, 0..c]).reshape([b, l, c])
        };
        let k = self.kernels;
        let x = k.add(res, x);
        let x = k.transpose12(x).reshape([b, c, h, w]);
        let x = k.transpose12(self.local_conv.forward(x).reshape([b, c, l]));
        let y = self.fc1.forward(self.mlp_norm.forward(x.clone()));
        let y = self.fc2.forward(k.gelu(y));
        k.add(x, y)
    }
}

/// The TinyViT image encoder.
#[derive(Debug, Clone)]
pub struct TinyViT {
    patch_embed: (Conv2d, Conv2d),
    stage0: Vec<MBConv>,
    /// The attention blocks of stages 1–3.
    stages: Vec<Vec<TinyViTBlock>>,
    /// Downsampling after stages 0, 1 and 2.
    merges: Vec<PatchMerging>,
    neck_conv1: Conv2d,
    neck_ln1: LayerNorm2d,
    neck_conv2: Conv2d,
    neck_ln2: LayerNorm2d,
    kernels: Kernels,
    /// The hyper-parameters it was built with.
    pub config: TinyViTConfig,
}

impl TinyViT {
    /// The encoder under `p` (`image_encoder`) with `cfg`.
    pub fn load(l: &mut Loader, p: &str, cfg: &TinyViTConfig) -> Self {
        let d = cfg.embed_dims;
        let pe = format!("{p}.patch_embed.seq");
        let patch_embed = (
            conv2d_bn(l, &format!("{pe}.0"), [3, d[0] / 2], 1, 1, 1),
            conv2d_bn(l, &format!("{pe}.2"), [d[0] / 2, d[0]], 1, 1, 1),
        );
        let hidden = d[0] * cfg.mbconv_expand_ratio;
        let stage0 = (0..cfg.depths[0])
            .map(|i| MBConv::load(l, &format!("{p}.layers.0.blocks.{i}"), d[0], hidden))
            .collect();
        let merges = (0..3)
            .map(|s| PatchMerging::load(l, &format!("{p}.layers.{s}.downsample"), d[s], d[s + 1]))
            .collect();
        let stages = (1..4).map(|s| Self::load_stage(l, p, cfg, s)).collect();
        Self {
            patch_embed,
            stage0,
            stages,
            merges,
            neck_conv1: Conv2d::load(l, &format!("{p}.neck.0"), d[3], 256, 1, 1, 0, false),
            neck_ln1: LayerNorm2d::load(l, &format!("{p}.neck.1"), 256),
            neck_conv2: Conv2d::load(l, &format!("{p}.neck.2"), 256, 256, 3, 1, 1, false),
            neck_ln2: LayerNorm2d::load(l, &format!("{p}.neck.3"), 256),
            kernels: l.kernels,
            config: cfg.clone(),
        }
    }

    /// The attention blocks of stage `s` (1–3).
    fn load_stage(l: &mut Loader, p: &str, cfg: &TinyViTConfig, s: usize) -> Vec<TinyViTBlock> {
        let (dim, heads, ws) = (cfg.embed_dims[s], cfg.num_heads[s], cfg.window_sizes[s]);
        (0..cfg.depths[s])
            .map(|i| {
                let bp = format!("{p}.layers.{s}.blocks.{i}");
                TinyViTBlock::load(l, &bp, dim, heads, ws, cfg.mlp_ratio)
            })
            .collect()
    }

    /// Its linear layers (what `Precision::Bf16` switches to the bf16 kernel).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let blocks = self.stages.iter_mut().flatten();
        blocks
            .flat_map(|b| [&mut b.attn.qkv, &mut b.attn.proj, &mut b.fc1, &mut b.fc2])
            .collect()
    }

    /// `[B, 3, 256, 256]` → `[B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.kernels;
        let x = k.gelu(self.patch_embed.0.forward(x));
        let mut x = self.patch_embed.1.forward(x); // [B, 64, 256, 256]
        for blk in &self.stage0 {
            x = blk.forward(x);
        }
        for (blocks, merge) in self.stages.iter().zip(&self.merges) {
            x = merge.forward(x); // [B, C, H, W]
            let [b, c, h, w] = x.dims();
            let mut t = k.transpose12(x.reshape([b, c, h * w])); // [B, L, C]
            for blk in blocks {
                t = blk.forward(t, h, w);
            }
            x = k.transpose12(t).reshape([b, c, h, w]);
        }
        let x = self.neck_ln1.forward(self.neck_conv1.forward(x));
        self.neck_ln2.forward(self.neck_conv2.forward(x))
    }
}
