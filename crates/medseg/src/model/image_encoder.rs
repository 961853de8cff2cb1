//! SAM's ViT image encoder (`ImageEncoderViT`), as used by MedSAM (ViT-B).
//!
//! `[B, 3, 1024, 1024]` → `[B, 256, 64, 64]`. Windowed attention (14×14, zero-padded, not
//! masked) with decomposed relative positions, global attention in the listed blocks, and the
//! conv/LayerNorm2d neck.
//!
//! The decomposed relative-position bias is folded into the attention product instead of
//! being materialised as a dense `[N, N]` bias: the query is extended with its two bias rows
//! (`q·R_h`, `q·R_w`) and the key with the one-hot row/column of its position, so that
//! `q'·k' = scale·q·k + rel_h[q, row(k)] + rel_w[q, col(k)]` — the same sum, computed by one
//! fused attention call — on the GPU. On the CPU backend the bias is added to the scores as
//! the dense bias it stands for, in blocks of queries (`model::attention`): a third of the
//! multiply-adds of the folded keys.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor};

use super::common::{
    host_attention, pad_hw, window_partition, window_unpartition, Conv2d, HostBias, LayerNorm,
    LayerNorm2d, Linear, Loader,
};
use super::kernels::Kernels;

/// ViT hyper-parameters (`sam_model_registry`): ViT-B is the MedSAM one.
#[derive(Debug, Clone)]
pub struct ViTConfig {
    /// Input side (1024).
    pub img_size: usize,
    /// Patch side (16).
    pub patch_size: usize,
    /// Token width (768 for ViT-B).
    pub embed_dim: usize,
    /// Transformer blocks (12).
    pub depth: usize,
    /// Attention heads (12).
    pub num_heads: usize,
    /// Blocks with global attention (2, 5, 8, 11); the others use windows.
    pub global_attn_indexes: Vec<usize>,
    /// Window side of the windowed blocks (14).
    pub window_size: usize,
    /// Channels of the neck's output (256).
    pub out_chans: usize,
}

impl ViTConfig {
    /// SAM ViT-B, MedSAM's encoder.
    pub fn vit_b() -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            global_attn_indexes: vec![2, 5, 8, 11],
            window_size: 14,
            out_chans: 256,
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    /// `[size, size, head_dim]`: `rel_pos_h` gathered as `R_h[i, j] = rel_pos_h[i - j + size - 1]`.
    rel_h: Tensor<3>,
    rel_w: Tensor<3>,
    /// `[1, 1, N, size_h + size_w]`: one-hot row and column of each key position.
    key_onehot: Tensor<4>,
    num_heads: usize,
    scale: f64,
    kernels: Kernels,
}

/// `R[i, j] = rel_pos[i - j + size - 1]` (`get_rel_pos` for equal query/key sizes).
fn gather_rel_pos(rel: &[f32], size: usize, hd: usize) -> Vec<f32> {
    let mut out = vec![0.0; size * size * hd];
    for i in 0..size {
        for j in 0..size {
            let r = i + size - 1 - j;
            out[(i * size + j) * hd..(i * size + j + 1) * hd]
                .copy_from_slice(&rel[r * hd..(r + 1) * hd]);
        }
    }
    out
}

impl Attention {
    fn load(l: &mut Loader, p: &str, dim: usize, heads: usize, size: usize) -> Self {
        let hd = dim / heads;
        let rh = l.values(&format!("{p}.rel_pos_h"), &[2 * size - 1, hd]);
        let rw = l.values(&format!("{p}.rel_pos_w"), &[2 * size - 1, hd]);
        let n = size * size;
        let mut onehot = vec![0.0f32; n * 2 * size];
        for y in 0..size {
            for x in 0..size {
                let t = y * size + x;
                onehot[t * 2 * size + y] = 1.0;
                onehot[t * 2 * size + size + x] = 1.0;
            }
        }
        Self {
            qkv: Linear::load(l, &format!("{p}.qkv"), dim, 3 * dim, true),
            proj: Linear::load(l, &format!("{p}.proj"), dim, dim, true),
            rel_h: l.from_vec(gather_rel_pos(&rh, size, hd), [size, size, hd]),
            rel_w: l.from_vec(gather_rel_pos(&rw, size, hd), [size, size, hd]),
            key_onehot: l.from_vec(onehot, [1, 1, n, 2 * size]),
            num_heads: heads,
            scale: (hd as f64).powf(-0.5),
            kernels: l.kernels,
        }
    }

    /// `[B, H, W, C]` → `[B, H, W, C]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let (nh, hd, n) = (self.num_heads, c / self.num_heads, h * w);
        // [B, N, 3, heads, hd] → [3, B, heads, N, hd]
        let qkv = self
            .qkv
            .forward(x.reshape([b, n, c]))
            .reshape([b, n, 3, nh, hd])
            .permute([2, 0, 3, 1, 4]);
        let q: Tensor<4> = qkv.clone().narrow(0, 0, 1).reshape([b, nh, n, hd]);
        let k: Tensor<4> = qkv.clone().narrow(0, 1, 1).reshape([b, nh, n, hd]);
        let v: Tensor<4> = qkv.narrow(0, 2, 1).reshape([b, nh, n, hd]);

        // rel_h[b, y, x, ky] = Σ_c q[b, y, x, c] · R_h[y, ky, c]  (batched over y)
        let q4 = q.clone().reshape([b * nh, h, w, hd]);
        let rel_h = q4
            .clone()
            .permute([1, 0, 2, 3])
            .reshape([h, b * nh * w, hd])
            .matmul(self.rel_h.clone().swap_dims(1, 2))
            .reshape([h, b * nh, w, h])
            .permute([1, 0, 2, 3])
            .reshape([b, nh, n, h]);
        // rel_w[b, y, x, kx] = Σ_c q[b, y, x, c] · R_w[x, kx, c]  (batched over x)
        let rel_w = q4
            .permute([2, 0, 1, 3])
            .reshape([w, b * nh * h, hd])
            .matmul(self.rel_w.clone().swap_dims(1, 2))
            .reshape([w, b * nh, h, w])
            .permute([1, 2, 0, 3])
            .reshape([b, nh, n, w]);
        let q = q * self.scale;
        let out = if self.kernels == Kernels::Host && q.dtype() == DType::F32 {
            let rel = HostBias::Rel(Box::new((rel_h, rel_w, (h, w))));
            host_attention(q, k, v, rel, self.qkv.products())
        } else {
            self.attend(q, k, v, rel_h, rel_w)
        }; // [B, heads, N, hd]
        let out = out.swap_dims(1, 2).reshape([b, h, w, c]);
        self.proj.forward(out)
    }

    /// `softmax(q·kᵀ + rel) · v` with Burn's fused attention (the GPU), the relative position
    /// folded into the keys: queries
    /// `[q, rel_h, rel_w]` against keys `[k, one-hot row, one-hot column]`.
    fn attend(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        rh: Tensor<4>,
        rw: Tensor<4>,
    ) -> Tensor<4> {
        let [b, nh, n, _] = q.dims();
        let (h, w) = (rh.dims()[3], rw.dims()[3]);
        let q_aug = Tensor::cat(vec![q, rh, rw], 3);
        let k_aug = Tensor::cat(
            vec![k, self.key_onehot.clone().expand([b, nh, n, h + w])],
            3,
        );
        let opts = AttentionModuleOptions {
            scale: Some(1.0),
            ..Default::default()
        };
        attention(q_aug, k_aug, v, None, None, opts)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    window_size: usize,
    kernels: Kernels,
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if self.window_size > 0 {
            let [b, h, w, _] = x.dims();
            let ws = self.window_size;
            let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
            let x = window_partition(pad_hw(x, ph, pw), ws);
            let x = self.attn.forward(x);
            let x = window_unpartition(x, ws, b, h + ph, w + pw);
            let c = x.dims()[3];
            x.slice([0..b, 0..h, 0..w, 0..c])
        } else {
            self.attn.forward(x)
        };
        let x = self.kernels.add(shortcut, x);
        let y = self.lin1.forward(self.norm2.forward(x.clone()));
        let y = self.lin2.forward(self.kernels.gelu(y));
        self.kernels.add(x, y)
    }
}

/// The ViT image encoder.
#[derive(Debug, Clone)]
pub struct ImageEncoderViT {
    patch_embed: Conv2d,
    pos_embed: Tensor<4>,
    blocks: Vec<Block>,
    neck_conv1: Conv2d,
    neck_ln1: LayerNorm2d,
    neck_conv2: Conv2d,
    neck_ln2: LayerNorm2d,
    /// The hyper-parameters it was built with.
    pub config: ViTConfig,
}

impl ImageEncoderViT {
    /// The encoder under `p` (`image_encoder`) with `cfg`.
    pub fn load(l: &mut Loader, p: &str, cfg: &ViTConfig) -> Self {
        let d = cfg.embed_dim;
        let grid = cfg.img_size / cfg.patch_size;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let bp = format!("{p}.blocks.{i}");
                let global = cfg.global_attn_indexes.contains(&i);
                let size = if global { grid } else { cfg.window_size };
                Block {
                    norm1: LayerNorm::load(l, &format!("{bp}.norm1"), d, 1e-6),
                    attn: Attention::load(l, &format!("{bp}.attn"), d, cfg.num_heads, size),
                    norm2: LayerNorm::load(l, &format!("{bp}.norm2"), d, 1e-6),
                    lin1: Linear::load(l, &format!("{bp}.mlp.lin1"), d, 4 * d, true),
                    lin2: Linear::load(l, &format!("{bp}.mlp.lin2"), 4 * d, d, true),
                    window_size: if global { 0 } else { cfg.window_size },
                    kernels: l.kernels,
                }
            })
            .collect();
        Self {
            patch_embed: Conv2d::load(
                l,
                &format!("{p}.patch_embed.proj"),
                3,
                d,
                cfg.patch_size,
                cfg.patch_size,
                0,
                true,
            ),
            pos_embed: l.tensor(&format!("{p}.pos_embed"), [1, grid, grid, d]),
            blocks,
            neck_conv1: Conv2d::load(l, &format!("{p}.neck.0"), d, cfg.out_chans, 1, 1, 0, false),
            neck_ln1: LayerNorm2d::load(l, &format!("{p}.neck.1"), cfg.out_chans),
            neck_conv2: Conv2d::load(
                l,
                &format!("{p}.neck.2"),
                cfg.out_chans,
                cfg.out_chans,
                3,
                1,
                1,
                false,
            ),
            neck_ln2: LayerNorm2d::load(l, &format!("{p}.neck.3"), cfg.out_chans),
            config: cfg.clone(),
        }
    }

    /// Its linear layers (what `Precision::Bf16` switches to the bf16 kernel).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let blocks = self.blocks.iter_mut();
        blocks
            .flat_map(|b| [&mut b.attn.qkv, &mut b.attn.proj, &mut b.lin1, &mut b.lin2])
            .collect()
    }

    /// `[B, 3, 1024, 1024]` → `[B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.patch_embed.forward(x).permute([0, 2, 3, 1]); // [B, 64, 64, 768]
        let mut x = x + self.pos_embed.clone();
        for blk in &self.blocks {
            x = blk.forward(x);
        }
        let x = x.permute([0, 3, 1, 2]);
        let x = self.neck_ln1.forward(self.neck_conv1.forward(x));
        self.neck_ln2.forward(self.neck_conv2.forward(x))
    }
}
