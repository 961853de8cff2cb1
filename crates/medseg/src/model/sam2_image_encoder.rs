//! SAM 2's image encoder (`sam2/modeling/backbones/image_encoder.py`): the Hiera trunk, the
//! FPN neck (1×1 lateral convolutions to `d_model`, nearest 2× top-down sums on the chosen
//! levels, a sine positional encoding per level) and the scalp that drops the coarsest level.

use burn::tensor::{Tensor, TensorData};

use super::common::{Conv2d, Loader};
use super::hiera::{Hiera, HieraConfig};
use super::position_encoding;

/// What the image encoder hands the rest of SAM 2 (`backbone_out`).
#[derive(Debug, Clone)]
pub struct BackboneOut {
    /// The coarsest kept level, `[B, d_model, S/16, S/16]` (`vision_features`).
    pub vision_features: Tensor<4>,
    /// The positional encoding of each kept level, finest first (`vision_pos_enc`).
    pub vision_pos_enc: Vec<Tensor<4>>,
    /// The kept levels, finest first (`backbone_fpn`).
    pub backbone_fpn: Vec<Tensor<4>>,
}

/// `FpnNeck` with nearest interpolation and summed fusion.
#[derive(Debug, Clone)]
pub struct FpnNeck {
    /// One 1×1 convolution per trunk level, coarsest first (`convs.{i}.conv`).
    convs: Vec<Conv2d>,
    /// Levels (finest = 0) that add the coarser level's upsampled output.
    top_down_levels: Vec<usize>,
    d_model: usize,
}

impl FpnNeck {
    /// The neck under `p` for trunk levels of `channels` (coarsest first, as
    /// `backbone_channel_list`).
    pub fn load(
        l: &mut Loader,
        p: &str,
        d_model: usize,
        channels: &[usize],
        top_down: &[usize],
    ) -> Self {
        let convs = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                Conv2d::load(l, &format!("{p}.convs.{i}.conv"), c, d_model, 1, 1, 0, true)
            })
            .collect();
        Self {
            convs,
            top_down_levels: top_down.to_vec(),
            d_model,
        }
    }

    /// Trunk levels (finest first) → the neck's levels and their positional encodings.
    pub fn forward(&self, xs: Vec<Tensor<4>>) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let n = xs.len() - 1;
        let mut out: Vec<Option<Tensor<4>>> = vec![None; xs.len()];
        let mut prev: Option<Tensor<4>> = None;
        for (i, x) in xs.into_iter().enumerate().rev() {
            let lateral = self.convs[n - i].forward(x);
            let fused = match prev.take() {
                Some(coarse) if self.top_down_levels.contains(&i) => lateral + upsample2(coarse),
                _ => lateral,
            };
            prev = Some(fused.clone());
            out[i] = Some(fused);
        }
        let out: Vec<Tensor<4>> = out.into_iter().flatten().collect();
        let pos = out.iter().map(|f| self.position(f)).collect();
        (out, pos)
    }

    /// The sine encoding of `f`'s grid, `[B, d_model, h, w]`.
    fn position(&self, f: &Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = f.dims();
        let pe = position_encoding::sine(self.d_model, h, w);
        let pe = Tensor::<4>::from_data(TensorData::new(pe, [1, self.d_model, h, w]), &f.device());
        pe.expand([b, self.d_model, h, w])
    }
}

/// Nearest 2× upsampling of `[B, C, H, W]` (each value copied to a 2×2 block).
fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// SAM 2's `ImageEncoder`: trunk, neck, scalp.
#[derive(Debug, Clone)]
pub struct Sam2ImageEncoder {
    trunk: Hiera,
    neck: FpnNeck,
    /// Coarsest levels dropped after the neck.
    scalp: usize,
}

impl Sam2ImageEncoder {
    /// MedSAM2's encoder under `p` (`image_encoder`): Hiera-Tiny, a 256-wide neck with
    /// top-down fusion on levels 2 and 3, scalp 1 (`sam2.1_hiera_t.yaml`).
    pub fn load_tiny(l: &mut Loader, p: &str) -> Self {
        let config = HieraConfig::tiny();
        Self {
            trunk: Hiera::load(l, &format!("{p}.trunk"), &config),
            neck: FpnNeck::load(l, &format!("{p}.neck"), 256, &[768, 384, 192, 96], &[2, 3]),
            scalp: 1,
        }
    }

    /// The trunk alone (its stage outputs, for stage-by-stage checks).
    pub fn trunk(&self) -> &Hiera {
        &self.trunk
    }

    /// The trunk's linear layers (the neck has only convolutions): what `Precision::Bf16`
    /// switches to the bf16 kernel.
    pub fn linears_mut(&mut self) -> Vec<&mut super::common::Linear> {
        self.trunk.linears_mut()
    }

    /// `[B, 3, S, S]` (normalised, S a multiple of 32) → [`BackboneOut`].
    pub fn forward(&self, x: Tensor<4>) -> BackboneOut {
        let (mut features, mut pos) = self.neck.forward(self.trunk.forward(x));
        let keep = features.len().saturating_sub(self.scalp).max(1);
        features.truncate(keep);
        pos.truncate(keep);
        BackboneOut {
            vision_features: features[keep - 1].clone(),
            vision_pos_enc: pos,
            backbone_fpn: features,
        }
    }
}
