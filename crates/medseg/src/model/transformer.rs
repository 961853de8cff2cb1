//! SAM's `TwoWayTransformer`: tokens attend to the image and the image attends back.

use burn::tensor::activation::relu;
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

    /// `q [B, Nq, C]`, `k, v [B, Nk, C]` → `[B, Nq, C]`.
    fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.heads(self.q_proj.forward(q));
        let k = self.heads(self.k_proj.forward(k));
        let v = self.heads(self.v_proj.forward(v));
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let [b, h, n, c] = out.dims();
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, h * c]))
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
    fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: &Tensor<3>,
        key_pe: &Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = queries + self.cross_attn_token_to_image.forward(q, k, keys.clone());
        let queries = self.norm2.forward(queries);

        let mlp = self.lin2.forward(relu(self.lin1.forward(queries.clone())));
        let queries = self.norm3.forward(queries + mlp);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
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
    /// The transformer under `p`: `depth` blocks, `dim` wide, `heads` heads, an MLP of `mlp`.
    pub fn load(
        l: &mut Loader,
        p: &str,
        depth: usize,
        dim: usize,
        heads: usize,
        mlp: usize,
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
                    lin1: Linear::load(l, &format!("{b}.mlp.lin1"), dim, mlp, true),
                    lin2: Linear::load(l, &format!("{b}.mlp.lin2"), mlp, dim, true),
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

    /// image `[B, C, H, W]`, image_pe `[B, C, H, W]`, tokens `[B, T, C]` →
    /// (tokens `[B, T, C]`, image `[B, HW, C]`).
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [b, c, h, w] = image.dims();
        // Contiguous once here: `keys + key_pe` runs five times below.
        let keys0 = self.kernels.transpose12(image.reshape([b, c, h * w]));
        let key_pe = self.kernels.transpose12(image_pe.reshape([b, c, h * w]));
        let mut queries = point_embedding.clone();
        let mut keys = keys0;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, &point_embedding, &key_pe);
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + key_pe;
        let queries = queries + self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }
}
