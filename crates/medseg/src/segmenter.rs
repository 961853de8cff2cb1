//! The `Segmenter`: load a model once, embed an image once, prompt it many times.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::family::DefaultWeights;
use crate::frame::{Frame, LOW_RES, LOW_RES_LEN};
use crate::model::build::{self, Net};
/// Read a tensor back to the host (it lives with the network's common code).
pub use crate::model::common::to_vec;
use crate::model::cpu::bf16_choice;
use crate::model::sam2::Sam2;
use crate::model::sam2_mask_decoder::HighRes;
use crate::model::{sam2_prompts, Points};
use crate::model::{ImageSide, ModelFamily, PromptBatch, Sam};
use crate::precision::Precision;
use crate::preprocess::{Image, ModelInput};
pub use crate::prompt::Prompt;
use crate::weights::{self, StateDict};

/// The CPU device (Burn's `flex` backend).
pub fn cpu() -> Device {
    Device::flex()
}

/// The precision a segmenter on `device` runs when `requested` is asked for (bf16 falls back
/// to f32 where it cannot run; see [`Segmenter::with_precision`]), without loading one.
pub fn precision_on(requested: Precision, device: &Device) -> Precision {
    match requested {
        Precision::Bf16 if bf16_fallback(device).is_none() => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// Why `Precision::Bf16` runs in `f32` on `device`, if it does: not the CPU backend, no bf16
/// kernel, or the kernel is not faster than `f32` here ([`bf16_choice`]).
pub fn bf16_fallback(device: &Device) -> Option<String> {
    if *device != Device::flex() {
        Some(format!(
            "bf16 runs on the CPU backend only, and this segmenter is on {device:?}"
        ))
    } else {
        let choice = bf16_choice();
        (!choice.runs_bf16).then(|| choice.reason.clone())
    }
}

/// A loaded model on a device. `Send + Sync`: share it between threads behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Segmenter {
    net: Net,
    family: ModelFamily,
    device: Device,
    /// What the image encoder runs in (what was asked for, or `F32` where bf16 cannot run).
    precision: Precision,
    /// Which loaded weights these are (clones share it): an embedding keeps the decoder work
    /// of the segmenter that made it only for that segmenter.
    id: u64,
    /// SHA-256 of the checkpoint file it was loaded from (`None`: built from a state_dict).
    weights_sha256: Option<String>,
}

/// Numbers the loaded models of this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// An image embedding with the frame that maps prompts and masks back to the image.
///
/// It also keeps the part of the mask decoder that depends only on the image (made by the
/// first prompt without a mask input), so that each further prompt pays only for what
/// depends on it.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    tensor: Tensor<4>,
    /// MedSAM2: the two finer neck levels through `conv_s0`, `conv_s1`.
    high_res: Option<HighRes>,
    frame: Frame,
    /// The decoder's image side and the id of the segmenter that made it.
    side: OnceLock<(u64, ImageSide)>,
}

impl ImageEmbedding {
    /// The embedding, `[1, 256, 64, 64]` (MedSAM2: `[1, 256, 32, 32]`, the coarsest neck level
    /// with `no_mem_embed` added, `SAM2ImagePredictor`'s `image_embed`).
    pub fn tensor(&self) -> &Tensor<4> {
        &self.tensor
    }

    /// How the image sits in the model input.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// `(height, width)` of the image.
    pub fn original_size(&self) -> (usize, usize) {
        self.frame.original
    }

    /// The family that made it.
    pub fn family(&self) -> ModelFamily {
        self.frame.family
    }
}

/// The decoder's answer for each prompt of a batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Number of prompts (boxes) and masks per prompt (1, or 3 with `multimask`).
    pub batch: usize,
    /// 1, or 3 with multimask output.
    pub masks_per_prompt: usize,
    /// `(height, width)` of the masks (the original image).
    pub size: (usize, usize),
    /// `[batch, masks_per_prompt, H, W]`, true inside.
    pub masks: Vec<bool>,
    /// `[batch, masks_per_prompt, low_res, low_res]` low-res logits, in the model frame
    /// (MedSAM2's clamped to ±32 as `SAM2ImagePredictor` returns them).
    pub low_res_logits: Vec<f32>,
    /// Side of a low-res plane: 256, MedSAM2 128.
    pub low_res: usize,
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

    /// Low-res logits of mask `m` of prompt `b`, `low_res × low_res`.
    pub fn logits(&self, b: usize, m: usize) -> &[f32] {
        let i = b * self.masks_per_prompt + m;
        let n = self.low_res * self.low_res;
        &self.low_res_logits[i * n..(i + 1) * n]
    }
}

impl Segmenter {
    /// Load `family` from a checkpoint (`.pth` or `.safetensors`) on `device`.
    /// [`Segmenter::weights_sha256`] tells which file it was.
    pub fn from_file(family: ModelFamily, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let (sd, sha) = StateDict::load_with_sha256(path)?;
        Self::with_sha256(family, &sd, sha, device)
    }

    fn with_sha256(
        family: ModelFamily,
        sd: &StateDict,
        sha256: String,
        device: &Device,
    ) -> Result<Self> {
        let mut seg = Self::from_state_dict(family, sd, device)?;
        seg.weights_sha256 = Some(sha256);
        Ok(seg)
    }

    /// SHA-256 (lowercase hex) of the checkpoint file this segmenter was loaded from, hashed
    /// as it was loaded; `None` for one built from an in-memory state_dict. Cohorts record it
    /// (a case is redone when the weights change) and a pickled Python `Segmenter` checks it.
    pub fn weights_sha256(&self) -> Option<&str> {
        self.weights_sha256.as_deref()
    }

    /// Build from an in-memory state_dict.
    pub fn from_state_dict(family: ModelFamily, sd: &StateDict, device: &Device) -> Result<Self> {
        let net = build::build(family, sd, device)?;
        Ok(Self {
            net,
            family,
            device: device.clone(),
            precision: Precision::F32,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            weights_sha256: None,
        })
    }

    /// `family` from `weights`, or without a path its default weights
    /// ([`Segmenter::from_default_weights`]). Never touches the network.
    pub fn new(family: ModelFamily, weights: Option<&Path>, device: &Device) -> Result<Self> {
        match weights {
            Some(p) => Self::from_file(family, p, device),
            None => Self::from_default_weights(family, device),
        }
    }

    /// `family` from the cache of its default weights (LiteMedSAM: the official
    /// `lite_medsam.pth`, put there once by [`weights::fetch_default`] or
    /// `medseg fetch-weights`). An empty cache, and MedSAM (which has none), is an error
    /// saying what to do. Never touches the network.
    pub fn from_default_weights(family: ModelFamily, device: &Device) -> Result<Self> {
        match family.spec().default_weights {
            DefaultWeights::LiteMedSamCache => {
                // `require_cached` has checked the file against this SHA-256.
                let p = weights::lite_medsam::require_cached()?;
                let sha = weights::lite_medsam::SHA256.to_string();
                Self::with_sha256(family, &StateDict::load(&p)?, sha, device)
            }
            DefaultWeights::None(what) => Err(Error::WeightsUnavailable(what.into())),
        }
    }

    /// Run the image encoder in `precision` ([`Precision`]). `Bf16` where it cannot run (not
    /// the CPU backend, a CPU without AVX-512 BF16) or would not be faster (the one-time check
    /// of [`bf16_choice`]) leaves the segmenter in `F32` and says why on
    /// stderr, once per process; [`Segmenter::precision`] tells which one runs.
    /// Switching back to `F32` restores the exact path. Embeddings made before keep the
    /// precision they were made in.
    ///
    /// ```no_run
    /// use medseg::{ModelFamily, Precision, Segmenter};
    /// # fn main() -> medseg::Result<()> {
    /// let seg = Segmenter::new(ModelFamily::LiteMedSam, None, &medseg::cpu())?
    ///     .with_precision(Precision::Bf16);
    /// println!("the image encoder runs in {}", seg.precision()); // bf16, or f32 (and a note)
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let runs = match precision {
            Precision::Bf16 => match bf16_fallback(&self.device) {
                Some(why) => {
                    static SAID: Once = Once::new();
                    SAID.call_once(|| eprintln!("medseg: running in f32, not bf16: {why}"));
                    Precision::F32
                }
                None => Precision::Bf16,
            },
            Precision::F32 => Precision::F32,
        };
        let on = runs == Precision::Bf16;
        (self.net.bf16_linears().into_par_iter()).for_each(|linear| linear.set_bf16(on));
        self.precision = runs;
        self
    }

    /// The precision the image encoder runs in (see [`Segmenter::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The family of the loaded model.
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// The underlying SAM model of MedSAM or LiteMedSAM (for stage-by-stage use and parity
    /// tests); `None` for MedSAM2 (see [`Segmenter::sam2`]).
    pub fn model(&self) -> Option<&Sam> {
        match &self.net {
            Net::Sam(m) => Some(m),
            Net::Sam2(_) => None,
        }
    }

    /// The underlying SAM 2 model of MedSAM2; `None` for the other families.
    pub fn sam2(&self) -> Option<&Sam2> {
        match &self.net {
            Net::Sam2(m) => Some(m),
            Net::Sam(_) => None,
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The frame of an image of `(height, width)` in this model.
    pub fn frame(&self, size: (usize, usize)) -> Frame {
        Frame::new(self.family, size)
    }

    /// Preprocess exactly as the family's official script does.
    pub fn preprocess(&self, image: &Image) -> Result<ModelInput> {
        self.frame((image.height, image.width)).input(image)
    }

    /// Run the image encoder on an input `frame` made ([`Frame::input`]).
    pub fn embed_input(&self, input: &ModelInput, frame: Frame) -> ImageEmbedding {
        let s = input.size;
        let x = Tensor::<4>::from_data(
            TensorData::new(input.data.clone(), [1, 3, s, s]),
            &self.device,
        );
        let (tensor, high_res) = match &self.net {
            Net::Sam(m) => (m.embed(x), None),
            Net::Sam2(m) => {
                let f = m.encode_image(x);
                (m.condition(&f, None), Some(f.high_res))
            }
        };
        ImageEmbedding {
            tensor,
            high_res,
            frame,
            side: OnceLock::new(),
        }
    }

    /// An embedding made elsewhere (a saved one, or another implementation's), `[1, 256, 64,
    /// 64]`, of an image in `frame`; refused when the shape or the family is not this model's.
    pub fn embedding_from_tensor(&self, tensor: Tensor<4>, frame: Frame) -> Result<ImageEmbedding> {
        if self.family.is_sam2() {
            return Err(Error::InvalidEmbedding(
                "a MedSAM2 embedding also needs the image's high-resolution features: embed the \
                 image with this segmenter"
                    .into(),
            ));
        }
        let dims = tensor.dims();
        if dims != [1, 256, 64, 64] {
            return Err(Error::InvalidEmbedding(format!(
                "an image embedding is [1, 256, 64, 64], got {dims:?}"
            )));
        }
        if frame.family != self.family {
            return Err(Error::InvalidEmbedding(format!(
                "the frame is {}'s, this segmenter is {}",
                frame.family, self.family
            )));
        }
        Ok(ImageEmbedding {
            tensor,
            high_res: None,
            frame,
            side: OnceLock::new(),
        })
    }

    /// Preprocess and encode an image.
    pub fn embed(&self, image: &Image) -> Result<ImageEmbedding> {
        let frame = self.frame((image.height, image.width));
        let input = frame.input(image)?;
        Ok(self.embed_input(&input, frame))
    }

    /// Check a box against the image (see [`crate::prompt::validate_box`]).
    pub fn validate_box(b: [f64; 4], size: (usize, usize)) -> Result<()> {
        crate::prompt::validate_box(b, size)
    }

    /// Decode prompts on an embedding; masks come back at the original image size.
    pub fn predict(&self, emb: &ImageEmbedding, prompt: &Prompt) -> Result<Prediction> {
        if emb.family() != self.family {
            return Err(Error::InvalidPrompt(format!(
                "embedding was made by {}, this segmenter is {}",
                emb.family(),
                self.family
            )));
        }
        prompt.validate_for(emb.original_size(), self.family.low_res_side())?;
        let batch = self.prompt_batch(&emb.frame, prompt);
        self.decode_batch(emb, &batch, prompt.multimask)
    }

    /// A checked prompt in the model frame, each box a batch entry with the points and the
    /// mask input repeated.
    fn prompt_batch(&self, frame: &Frame, prompt: &Prompt) -> PromptBatch {
        let bs = prompt.boxes.len().max(1);
        let mut batch = PromptBatch::default();
        if !prompt.boxes.is_empty() {
            let boxes = prompt.boxes.iter().map(|b| frame.box_to_model(*b));
            batch.boxes = Some(boxes.collect());
        }
        if !prompt.points.is_empty() {
            let per_prompt = prompt.points.len();
            let one = prompt.points.iter();
            let coords = one.clone().map(|(p, _)| frame.point_to_model(*p));
            let labels = one.map(|(_, l)| *l);
            batch.points = Some(Points {
                coords: coords.collect::<Vec<_>>().repeat(bs),
                labels: labels.collect::<Vec<_>>().repeat(bs),
                per_prompt,
            });
        }
        if let Some(m) = &prompt.mask_input {
            let s = self.family.low_res_side();
            batch.masks = Some(Tensor::from_data(
                TensorData::new(m.repeat(bs), [bs, 1, s, s]),
                &self.device,
            ));
        }
        batch
    }

    /// One box already in the model frame (the chain rule's), single-mask output.
    pub(crate) fn predict_model_box(
        &self,
        emb: &ImageEmbedding,
        model_box: [f32; 4],
    ) -> Result<Prediction> {
        let batch = PromptBatch {
            boxes: Some(vec![model_box]),
            ..Default::default()
        };
        self.decode_batch(emb, &batch, false)
    }

    /// One decoder run for a 3D session's slice: a box already in the model frame (the chain
    /// rule's, or none), clicks in image pixels, and optionally earlier low-res logits as the
    /// mask input (SAM's iterative refinement); single-mask output.
    pub(crate) fn predict_refined(
        &self,
        emb: &ImageEmbedding,
        model_box: Option<[f32; 4]>,
        points: &[([f64; 2], i64)],
        mask_input: Option<&[f32]>,
    ) -> Result<Prediction> {
        let prompt = Prompt {
            points: points.to_vec(),
            mask_input: mask_input.map(<[f32]>::to_vec),
            ..Default::default()
        };
        let mut batch = self.prompt_batch(&emb.frame, &prompt);
        batch.boxes = model_box.map(|b| vec![b]);
        self.decode_batch(emb, &batch, false)
    }

    /// Decode a prompt batch in the model frame; masks through the embedding's frame.
    fn decode_batch(
        &self,
        emb: &ImageEmbedding,
        batch: &PromptBatch,
        multimask: bool,
    ) -> Result<Prediction> {
        let bs = batch.batch_size();
        let sam = match &self.net {
            Net::Sam(m) => m,
            Net::Sam2(m) => return self.decode_batch_sam2(m, emb, batch, multimask),
        };
        let prepared = match batch.masks {
            Some(_) => None, // a mask input changes the image side: the full decoder
            None => sam.decode_prepared(&self.image_side(sam, emb), batch),
        };
        let (masks, iou) = prepared.unwrap_or_else(|| sam.decode(emb.tensor.clone(), batch));
        let nm = masks.dims()[1];
        let (lo, hi) = if multimask { (1, nm) } else { (0, 1) };
        let logits = to_vec(masks.slice([0..bs, lo..hi]))?;
        let ious = to_vec(iou.slice([0..bs, lo..hi]))?;
        let masks = logits
            .chunks_exact(LOW_RES_LEN)
            .flat_map(|plane| emb.frame.mask(plane))
            .collect();
        Ok(Prediction {
            batch: bs,
            masks_per_prompt: hi - lo,
            size: emb.original_size(),
            masks,
            low_res_logits: logits,
            low_res: LOW_RES,
            iou_predictions: ious,
        })
    }

    /// MedSAM2's decoder as `SAM2ImagePredictor._predict` runs it: boxes as points labelled 2
    /// and 3 before any clicks, the single mask replaced by the best multimask one when
    /// unstable; masks from the unclamped logits, logits returned clamped to ±32.
    fn decode_batch_sam2(
        &self,
        m: &Sam2,
        emb: &ImageEmbedding,
        batch: &PromptBatch,
        multimask: bool,
    ) -> Result<Prediction> {
        let high_res = emb.high_res.as_ref().ok_or_else(|| {
            Error::InvalidEmbedding("a MedSAM2 embedding without its high-res features".into())
        })?;
        let batch = sam2_prompts::boxes_as_points(batch);
        let (logits, ious, per) = m.predict(emb.tensor.clone(), high_res, &batch, multimask)?;
        let plane = self.family.low_res_side().pow(2);
        let masks = logits
            .chunks_exact(plane)
            .flat_map(|p| emb.frame.mask(p))
            .collect();
        Ok(Prediction {
            batch: batch.batch_size(),
            masks_per_prompt: per,
            size: emb.original_size(),
            masks,
            low_res_logits: sam2_prompts::clamp_logits(logits),
            low_res: self.family.low_res_side(),
            iou_predictions: ious,
        })
    }

    /// The decoder's image side of `emb`: kept in it the first time, recomputed (not kept) when
    /// another segmenter made the kept one.
    fn image_side<'a>(&self, sam: &Sam, emb: &'a ImageEmbedding) -> Cow<'a, ImageSide> {
        let make = || sam.prepare(emb.tensor.clone());
        let (id, side) = emb.side.get_or_init(|| (self.id, make()));
        if *id == self.id {
            Cow::Borrowed(side)
        } else {
            Cow::Owned(make())
        }
    }

    /// One-call convenience: embed `image`, segment inside `bbox`.
    pub fn segment(&self, image: &Image, bbox: [f64; 4]) -> Result<Prediction> {
        Self::validate_box(bbox, (image.height, image.width))?;
        let emb = self.embed(image)?;
        self.predict(&emb, &Prompt::from_box(bbox))
    }
}
