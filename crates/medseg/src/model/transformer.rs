//! SAM's `TwoWayTransformer`: tokens attend to the image and the image attends back.

use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

use super::common::{LayerNorm, Linear, Loader};
use super::kernels::Kernels;

/// Multi-head attention with an optional down-projection of the internal dimension.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn load(l: &mut Loader, p: &str, dim: usize, heads: usize, downsample: usize) -> Self {
        let inner = dim / downsample;
        Self {
            q_proj: Linear::load(l, &format!("{p}.q_proj"), dim, inner, true),
            k_proj: Linear::load(l, &format!("{p}.k_proj"), dim, inner, true),
            v_proj: Linear::load(l, &format!("{p}.v_proj"), dim, inner, true),
            out_proj: Linear::load(l, &format!("{p}.out_proj"), inner, dim, true),
            num_heads: heads,
        }
    }

    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }

    fn project_q(&self, x: Tensor<3>) -> Tensor<4> {
        self.heads(self.q_proj.forward(x))
    }

    fn project_k(&self, x: Tensor<3>) -> Tensor<4> {
        self.heads(self.k_proj.forward(x))
    }

    fn project_v(&self, x: Tensor<3>) -> Tensor<4> {
        self.heads(self.v_proj.forward(x))
    }

    /// Projected heads `q [B, h, Nq, c]`, `k, v [B, h, Nk, c]` → `[B, Nq, C]`.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let [b, h, n, c] = out.dims();
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, h * c]))
    }

    /// `q [B, Nq, C]`, `k, v [B, Nk, C]` → `[B, Nq, C]`.
    fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        self.attend(self.project_q(q), self.project_k(k), self.project_v(v))
    }

    /// Per-head width `d` (the projections are `[C, heads · d]`).
    fn head_dim(&self) -> usize {
        self.q_proj.weight.dims()[1] / self.num_heads
    }

    /// The columns of head `h` of a projection weight `[C, heads · d]`, as `[b, heads, C, d]`.
    fn by_head(&self, w: &Tensor<2>, b: usize) -> Tensor<4> {
        let [c, inner] = w.dims();
        let h = self.num_heads;
        w.clone()
            .reshape([c, h, inner / h])
            .swap_dims(0, 1)
            .unsqueeze::<4>()
            .expand([b, h, c, inner / h])
    }

    /// A few tokens `q [B, T, C]` attending to many image rows (`k, v [B, N, C]`), the same
    /// function as [`Attention::forward`] with the algebra moved to the token side: each
    /// head's `q_h W_k,hᵀ` scores the raw keys (`q_h · b_k,h` is the same for every key and
    /// cancels in the softmax), and the weights average the raw values before `W_v,h`
    /// (they sum to one, so `b_v,h` passes through). Costs `2 · N · C · heads · T` instead of
    /// the `2 · N · C · heads · d` of projecting every image row, so it is taken when `T < d`.
    fn token_to_image(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let ([b, t, c], h, d) = (q.dims(), self.num_heads, self.head_dim());
        if t >= d {
            return self.forward(q, k, v);
        }
        let scale = (d as f64).powf(-0.5);
        let qh = self.project_q(q); // [B, h, T, d]
        let qk = qh.matmul(self.by_head(&self.k_proj.weight, b).swap_dims(2, 3)) * scale;
        let scores = qk.reshape([b, h * t, c]).matmul(k.swap_dims(1, 2)); // [B, hT, N]
        let mixed = softmax(scores, 2).matmul(v).reshape([b, h, t, c]);
        let bias = self.v_proj.bias.clone().map(|bv| bv.reshape([1, h, 1, d]));
        let mut out = mixed.matmul(self.by_head(&self.v_proj.weight, b)); // [B, h, T, d]
        if let Some(bv) = bias {
            out = out + bv;
        }
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, h * d]))
    }

    /// Many image rows `q [B, N, C]` attending to a few tokens (`k, v [B, T, C]`), the same
    /// function as [`Attention::forward`] without projecting the image rows: the scores are
    /// `q · (W_q,h k_hᵀ) + b_q,h · k_hᵀ` and the output is `Σ_h A_h (v_h W_o,h) + b_o`.
    /// Taken when `T < d`; `q` may also come already projected ([`ImageSide`]).
    fn image_to_token(&self, q: ImageQueries, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let ([b, t, _], h, d) = (k.dims(), self.num_heads, self.head_dim());
        let q = match q {
            ImageQueries::Raw(q) if t >= d => return self.forward(q, k, v),
            ImageQueries::Projected(qh) if t >= d => {
                return self.attend(qh, self.project_k(k), self.project_v(v))
            }
            q => q,
        };
        let scale = (d as f64).powf(-0.5);
        let kt = self.project_k(k).swap_dims(2, 3); // [B, h, d, T]
        let weights = match q {
            ImageQueries::Projected(qh) => {
                let n = qh.dims()[2];
                let s = softmax(qh.matmul(kt) * scale, 3); // [B, h, N, T]
                s.swap_dims(1, 2).reshape([b, n, h * t])
            }
            ImageQueries::Raw(q) => {
                let [_, n, c] = q.dims();
                let g = self.by_head(&self.q_proj.weight, b).matmul(kt.clone()) * scale;
                let g = g.swap_dims(1, 2).reshape([b, c, h * t]); // [B, C, hT]
                let mut s = q.matmul(g); // [B, N, hT]
                if let Some(bq) = self.q_proj.bias.clone() {
                    let bq = bq.reshape([1, h, 1, d]).expand([b, h, 1, d]);
                    s = s + (bq.matmul(kt) * scale).reshape([b, 1, h * t]);
                }
                softmax(s.reshape([b, n, h, t]), 3).reshape([b, n, h * t])
            }
        };
        self.mix_out(weights, self.project_v(v))
    }

    /// Attention weights `[B, N, heads · T]` and values `v_h [B, heads, T, d]` →
    /// `Σ_h A_h (v_h W_o,h) + b_o`, `[B, N, C]`.
    fn mix_out(&self, weights: Tensor<3>, vh: Tensor<4>) -> Tensor<3> {
        let [b, h, t, d] = vh.dims();
        let wo = &self.out_proj.weight; // [h · d, C]
        let c = wo.dims()[1];
        let wo = wo
            .clone()
            .reshape([h, d, c])
            .unsqueeze::<4>()
            .expand([b, h, d, c]);
        let vo = vh.matmul(wo).reshape([b, h * t, c]);
        let out = weights.matmul(vo);
        match self.out_proj.bias.clone() {
            Some(bo) => out + bo.reshape([1, 1, c]),
            None => out,
        }
    }
}

/// The image rows that query the tokens in an image→token attention.
enum ImageQueries {
    /// `[B, N, C]`, before `q_proj`.
    Raw(Tensor<3>),
    /// `[B, heads, N, d]`, after `q_proj` (a kept [`ImageSide`]).
    Projected(Tensor<4>),
}

/// What one block's two cross-attentions take from the image side alone: the image tokens
/// (`keys`), their positional encoding, and the three projections of them that the block
/// needs before the image tokens change (token→image keys and values, image→token queries).
///
/// For the first block these depend only on the image embedding and the dense prompt, so a
/// prompt without a mask input can reuse them ([`TwoWayTransformer::prepare`]); the values are
/// the ones the unprepared path computes, so the outputs are the same.
#[derive(Debug, Clone)]
pub struct ImageSide {
    /// `[b, HW, C]`: image embedding plus dense prompt embedding, one row per position.
    keys: Tensor<3>,
    /// `[b, HW, C]`
    key_pe: Tensor<3>,
    /// Token→image keys and values, `[b, heads, HW, C / heads / 2]`.
    k: Tensor<4>,
    v: Tensor<4>,
    /// Image→token queries, `[b, heads, HW, C / heads / 2]`.
    q: Tensor<4>,
    /// The grid `(h, w)` of the image embedding.
    pub grid: (usize, usize),
}

impl ImageSide {
    /// The batch the side was made for (1 when it is shared by every prompt).
    pub fn batch(&self) -> usize {
        self.keys.dims()[0]
    }

    /// The same side for a batch of `b` prompts (a side of batch 1 is broadcast).
    fn for_batch(&self, b: usize) -> Self {
        if self.batch() == b {
            return self.clone();
        }
        let e3 = |t: &Tensor<3>| {
            let [_, n, c] = t.dims();
            t.clone().expand([b, n, c])
        };
        let e4 = |t: &Tensor<4>| {
            let [_, h, n, c] = t.dims();
            t.clone().expand([b, h, n, c])
        };
        Self {
            keys: e3(&self.keys),
            key_pe: e3(&self.key_pe),
            k: e4(&self.k),
            v: e4(&self.v),
            q: e4(&self.q),
            grid: self.grid,
        }
    }
}

#[derive(Debug, Clone)]
struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    /// The block's image-side inputs from the image tokens `keys [B, HW, C]`.
    fn image_side(&self, keys: Tensor<3>, key_pe: Tensor<3>, grid: (usize, usize)) -> ImageSide {
        let k = keys.clone() + key_pe.clone();
        ImageSide {
            k: self.cross_attn_token_to_image.project_k(k.clone()),
            v: self.cross_attn_token_to_image.project_v(keys.clone()),
            q: self.cross_attn_image_to_token.project_q(k),
            keys,
            key_pe,
            grid,
        }
    }

    /// → (queries, keys) after the block.
    fn forward(
        &self,
        queries: Tensor<3>,
        image: BlockImage,
        query_pe: &Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let t2i = &self.cross_attn_token_to_image;
        let q = queries.clone() + query_pe.clone();
        let attended = match &image {
            BlockImage::Prepared(side) => {
                t2i.attend(t2i.project_q(q), side.k.clone(), side.v.clone())
            }
            BlockImage::Rows { keys, with_pe } => {
                t2i.token_to_image(q, with_pe.clone(), keys.clone())
            }
        };
        let queries = self.norm2.forward(queries + attended);

        let mlp = self.lin2.forward(relu(self.lin1.forward(queries.clone())));
        let queries = self.norm3.forward(queries + mlp);

        let (keys, image_queries) = match image {
            BlockImage::Prepared(side) => (side.keys, ImageQueries::Projected(side.q)),
            BlockImage::Rows { keys, with_pe } => (keys, ImageQueries::Raw(with_pe)),
        };
        let k = queries.clone() + query_pe.clone();
        let attended =
            self.cross_attn_image_to_token
                .image_to_token(image_queries, k, queries.clone());
        let keys = self.norm4.forward(keys + attended);
        (queries, keys)
    }
}

/// The image side a block starts from.
// Made once per block and call and moved straight in: the size of a Tensor handle (Burn's are
// large) does not matter here.
#[allow(clippy::large_enum_variant)]
enum BlockImage {
    /// The first block's, prepared once per embedding.
    Prepared(ImageSide),
    /// A later block's: the image rows `[B, HW, C]` the block before left, and the same plus
    /// their positional encoding.
    Rows { keys: Tensor<3>, with_pe: Tensor<3> },
}

/// SAM's `TwoWayTransformer`.
#[derive(Debug, Clone)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: LayerNorm,
    kernels: Kernels,
}

impl TwoWayTransformer {
    /// The transformer under `p`: `depth` blocks, `dim` wide, `heads` heads, an MLP of `mlp`
    /// (SAM's names: `mlp.lin1`, `mlp.lin2`).
    pub fn load(
        l: &mut Loader,
        p: &str,
        depth: usize,
        dim: usize,
        heads: usize,
        mlp: usize,
    ) -> Self {
        Self::load_named(l, p, [depth, dim, heads, mlp], ["mlp.lin1", "mlp.lin2"])
    }

    /// SAM 2's transformer: the same network, its MLP named `mlp.layers.0`, `mlp.layers.1`.
    pub fn load_sam2(
        l: &mut Loader,
        p: &str,
        depth: usize,
        dim: usize,
        heads: usize,
        mlp: usize,
    ) -> Self {
        Self::load_named(
            l,
            p,
            [depth, dim, heads, mlp],
            ["mlp.layers.0", "mlp.layers.1"],
        )
    }

    fn load_named(
        l: &mut Loader,
        p: &str,
        [depth, dim, heads, mlp]: [usize; 4],
        [lin1, lin2]: [&str; 2],
    ) -> Self {
        let layers = (0..depth)
            .map(|i| {
                let b = format!("{p}.layers.{i}");
                TwoWayAttentionBlock {
                    self_attn: Attention::load(l, &format!("{b}.self_attn"), dim, heads, 1),
                    norm1: LayerNorm::load(l, &format!("{b}.norm1"), dim, 1e-5),
                    cross_attn_token_to_image: Attention::load(
                        l,
                        &format!("{b}.cross_attn_token_to_image"),
                        dim,
                        heads,
                        2,
                    ),
                    norm2: LayerNorm::load(l, &format!("{b}.norm2"), dim, 1e-5),
                    lin1: Linear::load(l, &format!("{b}.{lin1}"), dim, mlp, true),
                    lin2: Linear::load(l, &format!("{b}.{lin2}"), mlp, dim, true),
                    norm3: LayerNorm::load(l, &format!("{b}.norm3"), dim, 1e-5),
                    norm4: LayerNorm::load(l, &format!("{b}.norm4"), dim, 1e-5),
                    cross_attn_image_to_token: Attention::load(
                        l,
                        &format!("{b}.cross_attn_image_to_token"),
                        dim,
                        heads,
                        2,
                    ),
                    skip_first_layer_pe: i == 0,
                }
            })
            .collect();
        Self {
            layers,
            final_attn_token_to_image: Attention::load(
                l,
                &format!("{p}.final_attn_token_to_image"),
                dim,
                heads,
                2,
            ),
            norm_final_attn: LayerNorm::load(l, &format!("{p}.norm_final_attn"), dim, 1e-5),
            kernels: l.kernels,
        }
    }

    /// The first block's image side from image `[b, C, H, W]` and image_pe `[b, C, H, W]`:
    /// everything the transformer computes before it needs the prompt tokens.
    pub fn prepare(&self, image: Tensor<4>, image_pe: Tensor<4>) -> ImageSide {
        let [b, c, h, w] = image.dims();
        // Contiguous once here: `keys + key_pe` runs once per block below.
        let keys = self.kernels.transpose12(image.reshape([b, c, h * w]));
        let key_pe = self.kernels.transpose12(image_pe.reshape([b, c, h * w]));
        self.layers[0].image_side(keys, key_pe, (h, w))
    }

    /// A prepared image side (batch 1 or `B`) and tokens `[B, T, C]` →
    /// (tokens `[B, T, C]`, image `[B, HW, C]`).
    pub fn forward_prepared(
        &self,
        side: &ImageSide,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        // `layers` is never empty: `load` makes `depth` (2) blocks.
        let side = side.for_batch(point_embedding.dims()[0]);
        let key_pe = side.key_pe.clone();
        let first = BlockImage::Prepared(side);
        let pe = &point_embedding;
        let (mut queries, mut keys) = self.layers[0].forward(pe.clone(), first, pe);
        for layer in &self.layers[1..] {
            let with_pe = keys.clone() + key_pe.clone();
            let image = BlockImage::Rows { keys, with_pe };
            (queries, keys) = layer.forward(queries, image, pe);
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + key_pe;
        let final_attn = &self.final_attn_token_to_image;
        let queries = queries + final_attn.token_to_image(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }

    /// image `[B, C, H, W]`, image_pe `[B, C, H, W]`, tokens `[B, T, C]` →
    /// (tokens `[B, T, C]`, image `[B, HW, C]`).
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        self.forward_prepared(&self.prepare(image, image_pe), point_embedding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{RawTensor, StateDict};
    use burn::tensor::{Device, TensorData};

    /// Deterministic values in [-0.5, 0.5).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn tensor3(seed: u64, dims: [usize; 3], device: &Device) -> Tensor<3> {
        let v = values(seed, dims.iter().product());
        Tensor::from_data(TensorData::new(v, dims), device)
    }

    /// SAM's cross-attention shape: 256 wide, 8 heads, inner 128 (head width 16).
    fn attention(device: &Device) -> Attention {
        let (c, inner) = (256, 128);
        let mut sd = StateDict::default();
        for (i, (name, shape)) in [
            ("q_proj", [inner, c]),
            ("k_proj", [inner, c]),
            ("v_proj", [inner, c]),
            ("out_proj", [c, inner]),
        ]
        .into_iter()
        .enumerate()
        {
            let w = values(10 + i as u64, shape[0] * shape[1]);
            let b = values(20 + i as u64, shape[0]);
            sd.tensors.insert(
                format!("a.{name}.weight"),
                RawTensor::new(shape.to_vec(), w),
            );
            sd.tensors
                .insert(format!("a.{name}.bias"), RawTensor::new(vec![shape[0]], b));
        }
        let mut l = Loader::new(&sd, device);
        Attention::load(&mut l, "a", c, 8, 2)
    }

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        let d = (a - b).abs().max();
        crate::model::common::to_vec(d).expect("a CPU tensor reads back")[0]
    }

    #[test]
    fn attention_through_the_tokens_is_the_same_function() {
        let device = Device::flex();
        let attn = attention(&device);
        let image = tensor3(1, [2, 64, 256], &device);
        let values_in = tensor3(2, [2, 64, 256], &device);
        // 7 tokens (a box prompt) take the token-side algebra; 16 (many points) take the
        // plain path; both must be SAM's attention.
        for t in [1, 7, 15, 16] {
            let tokens = tensor3(3 + t as u64, [2, t, 256], &device);
            let plain = attn.forward(tokens.clone(), image.clone(), values_in.clone());
            let fast = attn.token_to_image(tokens.clone(), image.clone(), values_in.clone());
            let d = max_diff(plain, fast);
            assert!(d < 1e-4, "token→image, {t} tokens: {d}");

            let plain = attn.forward(image.clone(), tokens.clone(), tokens.clone());
            let raw = ImageQueries::Raw(image.clone());
            let fast = attn.image_to_token(raw, tokens.clone(), tokens.clone());
            let d = max_diff(plain.clone(), fast);
            assert!(d < 1e-4, "image→token from raw rows, {t} tokens: {d}");

            let projected = ImageQueries::Projected(attn.project_q(image.clone()));
            let fast = attn.image_to_token(projected, tokens.clone(), tokens);
            let d = max_diff(plain, fast);
            assert!(d < 1e-4, "image→token from projected rows, {t} tokens: {d}");
        }
    }
}
