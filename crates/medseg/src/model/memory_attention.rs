//! SAM 2's `MemoryAttention` (`sam2/modeling/memory_attention.py`): the current slice's
//! features attend to themselves and then to the memory bank (earlier slices' memories and
//! object pointers), with rotary position encodings (`RoPEAttention`,
//! `sam2/modeling/sam/transformer.py`, `compute_axial_cis` in `position_encoding.py`).

use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor, TensorData};

use super::common::{host_attention, HostBias, LayerNorm, Linear, Loader};
use super::kernels::{host_in_place, Kernels};

/// The axial rotary encoding of a `w × h` grid for a head `dim` wide: per token, `dim / 2`
/// rotations, the first quarter of the pairs turned by `x · f_k`, the second by `y · f_k`,
/// `f_k = 1 / θ^(4k / dim)`, stored as cos and sin `[w·h, dim/2]`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// [`Kernels::Host`]: the tables on the host for [`super::host::rope`].
    host: Option<(Vec<f32>, Vec<f32>)>,
}

impl Rope {
    /// `compute_axial_cis(dim, end_x = w, end_y = h, theta)`, in `float32` as upstream.
    pub fn new(dim: usize, w: usize, h: usize, theta: f32, device: &burn::tensor::Device) -> Self {
        let freqs: Vec<f32> = (0..dim / 4)
            .map(|k| 1.0 / theta.powf((4 * k) as f32 / dim as f32))
            .collect();
        let n = w * h;
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * dim / 2),
            Vec::with_capacity(n * dim / 2),
        );
        for t in 0..n {
            let (x, y) = ((t % w) as f32, (t / w) as f32);
            for pos in [x, y] {
                for f in &freqs {
                    let angle = pos * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let make =
            |v: &[f32]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [n, dim / 2]), device);
        let host = Kernels::for_device(device) == Kernels::Host;
        Self {
            cos: make(&cos),
            sin: make(&sin),
            host: host.then_some((cos, sin)),
        }
    }

    /// Rotate the pairs of the first `rows` tokens of `x` `[B, N, dim]`, `rows` a multiple of
    /// the grid (the encoding repeated along the tokens, `rope_k_repeat`); the tokens after
    /// them (object pointers) stay as they are.
    fn apply(&self, x: Tensor<3>, rows: usize) -> Tensor<3> {
        let [b, _, d] = x.dims();
        match &self.host {
            Some((cos, sin)) if b == 1 => host_in_place(
                x,
                |x| self.apply_tensor(x, rows),
                |v| super::host::rope(v, d, rows, cos, sin),
            ),
            _ => self.apply_tensor(x, rows),
        }
    }

    /// [`Rope::apply`] in Burn's operations.
    fn apply_tensor(&self, x: Tensor<3>, rows: usize) -> Tensor<3> {
        let [b, n, d] = x.dims();
        if rows < n {
            let head = self.apply_tensor(x.clone().slice([0..b, 0..rows, 0..d]), rows);
            return Tensor::cat(vec![head, x.slice([0..b, rows..n, 0..d])], 1);
        }
        let grid = self.cos.dims()[0];
        let (mut cos, mut sin) = (self.cos.clone(), self.sin.clone());
        if n != grid {
            cos = cos.repeat_dim(0, n / grid);
            sin = sin.repeat_dim(0, n / grid);
        }
        let cos = cos.reshape([1, n, d / 2, 1]);
        let sin = sin.reshape([1, n, d / 2, 1]);
        let pairs = x.reshape([b, n, d / 2, 2]);
        let re = pairs.clone().slice([0..b, 0..n, 0..d / 2, 0..1]);
        let im = pairs.slice([0..b, 0..n, 0..d / 2, 1..2]);
        let out_re = re.clone() * cos.clone() - im.clone() * sin.clone();
        let out_im = re * sin + im * cos;
        Tensor::cat(vec![out_re, out_im], 3).reshape([b, n, d])
    }
}

/// `RoPEAttention` with one head (SAM 2.1 Tiny's memory attention).
#[derive(Debug, Clone)]
struct RopeAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    kernels: Kernels,
}

impl RopeAttention {
    fn load(l: &mut Loader, p: &str, dim: usize, kv_dim: usize) -> Self {
        Self {
            q_proj: Linear::load(l, &format!("{p}.q_proj"), dim, dim, true),
            k_proj: Linear::load(l, &format!("{p}.k_proj"), kv_dim, dim, true),
            v_proj: Linear::load(l, &format!("{p}.v_proj"), kv_dim, dim, true),
            out_proj: Linear::load(l, &format!("{p}.out_proj"), dim, dim, true),
            kernels: l.kernels,
        }
    }

    /// `q` `[B, N, dim]`, `k`, `v` `[B, M, kv_dim]`; the last `no_rope` keys (object
    /// pointers) are not rotated.
    fn forward(
        &self,
        rope: &Rope,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        no_rope: usize,
    ) -> Tensor<3> {
        let q = self.q_proj.forward(q);
        let n = q.dims()[1];
        let q = rope.apply(q, n);
        let k = self.k_proj.forward(k);
        let [_, m, d] = k.dims();
        let k = rope.apply(k, m - no_rope);
        let scale = 1.0 / (d as f64).sqrt();
        if self.kernels == Kernels::Host && q.dtype() == DType::F32 {
            return self.forward_host(q * scale, k, v);
        }
        let scores = q.matmul(k.swap_dims(1, 2)) * scale;
        let weights = self.kernels.softmax_last(scores);
        // The weights sum to 1 over the keys, so averaging the raw values first and projecting
        // after is the same function: `softmax(S) (V Wᵀ + b) = (softmax(S) V) Wᵀ + b`. With
        // memories 64 wide against 256 (cross-attention) it is a quarter of the multiply-adds.
        let kv_dim = v.dims()[2];
        let mixed = if kv_dim < d {
            self.v_proj.forward(weights.matmul(v))
        } else {
            weights.matmul(self.v_proj.forward(v))
        };
        self.out_proj.forward(mixed)
    }

    /// The attention of [`RopeAttention::forward`] on the host ([`host_attention`], in blocks of
    /// queries) on rotated, scaled `q` and rotated `k`; the values averaged before their
    /// projection, as on the GPU.
    fn forward_host(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let (d, kv_dim) = (q.dims()[2], v.dims()[2]);
        let v = if kv_dim < d {
            v
        } else {
            self.v_proj.forward(v)
        };
        let (q, k, v) = (q.unsqueeze_dim(1), k.unsqueeze_dim(1), v.unsqueeze_dim(1));
        let mixed = host_attention(q, k, v, HostBias::None, self.q_proj.products());
        let mixed: Tensor<3> = mixed.squeeze_dim(1);
        let mixed = if kv_dim < d {
            self.v_proj.forward(mixed)
        } else {
            mixed
        };
        self.out_proj.forward(mixed)
    }
}

/// `MemoryAttentionLayer`: pre-norm self-attention, cross-attention to the memory (positional
/// encoding on the keys only), pre-norm MLP with ReLU.
#[derive(Debug, Clone)]
struct MemoryAttentionLayer {
    self_attn: RopeAttention,
    cross_attn: RopeAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
}

impl MemoryAttentionLayer {
    fn load(l: &mut Loader, p: &str, dim: usize, kv_dim: usize, ffn: usize) -> Self {
        Self {
            self_attn: RopeAttention::load(l, &format!("{p}.self_attn"), dim, dim),
            cross_attn: RopeAttention::load(l, &format!("{p}.cross_attn_image"), dim, kv_dim),
            linear1: Linear::load(l, &format!("{p}.linear1"), dim, ffn, true),
            linear2: Linear::load(l, &format!("{p}.linear2"), ffn, dim, true),
            norm1: LayerNorm::load(l, &format!("{p}.norm1"), dim, 1e-5),
            norm2: LayerNorm::load(l, &format!("{p}.norm2"), dim, 1e-5),
            norm3: LayerNorm::load(l, &format!("{p}.norm3"), dim, 1e-5),
        }
    }

    fn forward(&self, rope: &Rope, tgt: Tensor<3>, memory: &MemoryTokens) -> Tensor<3> {
        let t = self.norm1.forward(tgt.clone());
        let tgt = tgt + self.self_attn.forward(rope, t.clone(), t.clone(), t, 0);
        let t = self.norm2.forward(tgt.clone());
        let k = memory.tokens.clone() + memory.pos.clone();
        let v = memory.tokens.clone();
        let tgt = tgt
            + self
                .cross_attn
                .forward(rope, t, k, v, memory.num_obj_ptr_tokens);
        let t = self.norm3.forward(tgt.clone());
        tgt.clone() + self.linear2.forward(relu(self.linear1.forward(t)))
    }
}

/// What the current slice attends to: spatial memories first, then object-pointer tokens.
#[derive(Debug, Clone)]
pub struct MemoryTokens {
    /// `[B, M, mem_dim]`.
    pub tokens: Tensor<3>,
    /// `[B, M, mem_dim]`: spatial + temporal encodings of the memories, the pointers'
    /// temporal encodings.
    pub pos: Tensor<3>,
    /// How many of the last tokens are object pointers (no rotary encoding on them).
    pub num_obj_ptr_tokens: usize,
}

/// SAM 2's `MemoryAttention` (4 layers, 256 wide, memories 64 wide, RoPE θ = 10⁴).
#[derive(Debug, Clone)]
pub struct MemoryAttention {
    layers: Vec<MemoryAttentionLayer>,
    norm: LayerNorm,
    rope: Rope,
}

impl MemoryAttention {
    /// The module under `p` (`memory_attention`) for features on a `grid × grid` map
    /// (MedSAM2: 32, `feat_sizes: [32, 32]`).
    pub fn load(l: &mut Loader, p: &str, grid: usize) -> Self {
        let (dim, kv_dim, ffn) = (256, 64, 2048);
        Self {
            layers: (0..4)
                .map(|i| {
                    MemoryAttentionLayer::load(l, &format!("{p}.layers.{i}"), dim, kv_dim, ffn)
                })
                .collect(),
            norm: LayerNorm::load(l, &format!("{p}.norm"), dim, 1e-5),
            rope: Rope::new(dim, grid, grid, 10000.0, &l.device),
        }
    }

    /// Its linear layers (what `Precision::Bf16` switches to the bf16 kernel).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = Vec::new();
        for layer in &mut self.layers {
            for a in [&mut layer.self_attn, &mut layer.cross_attn] {
                out.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj]);
            }
            out.extend([&mut layer.linear1, &mut layer.linear2]);
        }
        out
    }

    /// Current features `[B, HW, C]` with their positional encoding, and the memory →
    /// memory-conditioned features `[B, HW, C]`.
    pub fn forward(
        &self,
        curr: Tensor<3>,
        curr_pos: Tensor<3>,
        memory: &MemoryTokens,
    ) -> Tensor<3> {
        let mut x = curr + curr_pos * 0.1;
        for layer in &self.layers {
            x = layer.forward(&self.rope, x, memory);
        }
        self.norm.forward(x)
    }
}
