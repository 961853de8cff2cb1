//! The Segment Anything model in Burn: one file per part, named as in the paper and the
//! official code. Runs on any Burn device (`Device::flex()` on the CPU, `Device::wgpu(..)`).

pub mod attention;
pub mod bf16;
pub mod build;
pub mod common;
pub mod cpu;
pub mod hiera;
mod host;
pub mod image_encoder;
pub mod kernels;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_bank;
pub mod memory_encoder;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam2;
pub mod sam2_image_encoder;
pub mod sam2_mask_decoder;
pub mod sam2_prompts;
pub mod sam2_video;
pub mod tiny_vit;
pub mod transformer;

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::weights::StateDict;
use common::Loader;
pub use image_encoder::{ImageEncoderViT, ViTConfig};
pub use mask_decoder::MaskDecoder;
pub use prompt_encoder::{Points, PromptBatch, PromptEncoder};
pub use tiny_vit::{TinyViT, TinyViTConfig};
pub use transformer::{ImageSide, TwoWayTransformer};

use crate::family::Architecture;
pub use crate::family::ModelFamily;

/// The image encoder of either family.
#[derive(Debug, Clone)]
pub enum ImageEncoder {
    /// SAM's ViT (MedSAM).
    ViT(Box<ImageEncoderViT>),
    /// TinyViT (LiteMedSAM).
    TinyViT(Box<TinyViT>),
}

impl ImageEncoder {
    /// `[B, 3, S, S]` → `[B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ImageEncoder::ViT(e) => e.forward(x),
            ImageEncoder::TinyViT(e) => e.forward(x),
        }
    }

    /// Its linear layers (what `Precision::Bf16` switches to the bf16 kernel).
    pub fn linears_mut(&mut self) -> Vec<&mut common::Linear> {
        match self {
            ImageEncoder::ViT(e) => e.linears_mut(),
            ImageEncoder::TinyViT(e) => e.linears_mut(),
        }
    }
}

/// Image encoder + prompt encoder + mask decoder.
#[derive(Debug, Clone)]
pub struct Sam {
    /// Which family the weights are.
    pub family: ModelFamily,
    /// ViT-B or TinyViT.
    pub image_encoder: ImageEncoder,
    /// Points, boxes and masks to embeddings.
    pub prompt_encoder: PromptEncoder,
    /// Two-way transformer and mask heads.
    pub mask_decoder: MaskDecoder,
    /// Where the tensors live.
    pub device: Device,
}

impl Sam {
    /// Build the model from an official state_dict. Missing, unexpected or mis-shaped
    /// tensors, and a checkpoint of the other family, are refused with an error naming them.
    pub fn from_state_dict(family: ModelFamily, sd: &StateDict, device: &Device) -> Result<Self> {
        if let Some(found) = ModelFamily::detect(sd) {
            if found != family {
                return Err(Error::WeightsMismatch {
                    model: family.to_string(),
                    details: format!("this is a {found} checkpoint, not a {family} one"),
                });
            }
        }
        sd.check_finite()?;
        let mut l = Loader::new(sd, device);
        let image_encoder = match family.spec().architecture {
            Architecture::SamVitB => ImageEncoder::ViT(Box::new(ImageEncoderViT::load(
                &mut l,
                "image_encoder",
                &ViTConfig::vit_b(),
            ))),
            Architecture::SamTinyVit => ImageEncoder::TinyViT(Box::new(TinyViT::load(
                &mut l,
                "image_encoder",
                &TinyViTConfig::lite_medsam(),
            ))),
            Architecture::Sam2HieraTiny => {
                return Err(Error::InvalidOption(format!(
                    "{family} is a SAM 2 model: build it with model::build::build (or a Segmenter)"
                )))
            }
        };
        let s = family.image_size();
        let prompt_encoder =
            PromptEncoder::load(&mut l, "prompt_encoder", 256, (64, 64), (s, s), 16);
        let mask_decoder = MaskDecoder::load(&mut l, "mask_decoder", 256, 3);
        l.finish(family.name())?;
        Ok(Self {
            family,
            image_encoder,
            prompt_encoder,
            mask_decoder,
            device: device.clone(),
        })
    }

    /// `[B, 3, S, S]` (preprocessed) → image embedding `[B, 256, 64, 64]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<4> {
        self.image_encoder.forward(x)
    }

    /// One embedding `[1, 256, 64, 64]` and a batch of prompts → low-res logits
    /// `[B, 4, 256, 256]` and IoU predictions `[B, 4]` (index 0: single-mask output).
    pub fn decode(&self, embedding: Tensor<4>, prompts: &PromptBatch) -> (Tensor<4>, Tensor<2>) {
        let (sparse, dense) = self.prompt_encoder.forward(prompts);
        self.mask_decoder
            .forward(embedding, self.prompt_encoder.dense_pe(), sparse, dense)
    }

    /// The decoder's work that depends only on the embedding `[1, 256, 64, 64]` (the first
    /// block's image-side projections): shared by every prompt without a mask input.
    pub fn prepare(&self, embedding: Tensor<4>) -> ImageSide {
        let pe = &self.prompt_encoder;
        self.mask_decoder
            .prepare(embedding, pe.dense_pe(), pe.no_mask_dense())
    }

    /// [`Sam::decode`] on a side from [`Sam::prepare`]: the same outputs, without recomputing
    /// the side. `None` when the prompts carry a mask input (it changes the side: use
    /// [`Sam::decode`]).
    pub fn decode_prepared(
        &self,
        side: &ImageSide,
        prompts: &PromptBatch,
    ) -> Option<(Tensor<4>, Tensor<2>)> {
        if prompts.masks.is_some() {
            return None;
        }
        let (sparse, _) = self.prompt_encoder.forward(prompts);
        Some(self.mask_decoder.forward_prepared(side, sparse))
    }
}
