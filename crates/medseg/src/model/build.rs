//! A family's network from its checkpoint, as `build_sam.py` / `build_sam2.py` do: the
//! family's [`Architecture`] (its row in `family.rs`) says what to build.

use burn::tensor::Device;

use super::common::Linear;
use super::sam2::Sam2;
use super::Sam;
use crate::error::{Error, Result};
use crate::family::{Architecture, ModelFamily};
use crate::weights::StateDict;

/// The network behind a segmenter.
#[derive(Debug, Clone)]
pub enum Net {
    /// SAM's parts (MedSAM, LiteMedSAM).
    Sam(Box<Sam>),
    /// SAM 2 (MedSAM2, SAM 2.1).
    Sam2(Box<Sam2>),
}

/// Build `family`'s network from a state_dict (a checkpoint of another family is refused,
/// naming it).
pub fn build(family: ModelFamily, sd: &StateDict, device: &Device) -> Result<Net> {
    match family.spec().architecture {
        Architecture::Sam2HieraTiny => {
            // Meta's SAM 2.1 and MedSAM2 share one layout (`detect` reads it as MedSAM2).
            if let Some(found) = ModelFamily::detect(sd).filter(|f| !f.is_sam2()) {
                return Err(Error::WeightsMismatch {
                    model: family.to_string(),
                    details: format!("this is a {found} checkpoint, not a {family} one"),
                });
            }
            let sam2 = Sam2::from_state_dict(sd, family.image_size(), device)?;
            Ok(Net::Sam2(Box::new(sam2)))
        }
        Architecture::SamVitB | Architecture::SamTinyVit => Ok(Net::Sam(Box::new(
            Sam::from_state_dict(family, sd, device)?,
        ))),
    }
}

impl Net {
    /// The linear layers `Precision::Bf16` runs in bf16: the image encoder's, and SAM 2's
    /// memory attention.
    pub fn bf16_linears(&mut self) -> Vec<&mut Linear> {
        match self {
            Net::Sam(m) => m.image_encoder.linears_mut(),
            Net::Sam2(m) => {
                let Sam2 {
                    image_encoder,
                    memory_attention,
                    ..
                } = m.as_mut();
                let mut out = image_encoder.linears_mut();
                out.extend(memory_attention.linears_mut());
                out
            }
        }
    }
}
