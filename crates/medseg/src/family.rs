//! The model families and what tells them apart without building them (no Burn: the CLI's
//! `info`, the frame geometry and the fuzz targets use it too).

use crate::weights::StateDict;

/// The two supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// MedSAM: SAM ViT-B, 1024×1024 input (`medsam_vit_b.pth`).
    MedSam,
    /// LiteMedSAM: TinyViT encoder, 256×256 input (`lite_medsam.pth`).
    LiteMedSam,
}

impl ModelFamily {
    /// Side of the square model input.
    pub fn image_size(self) -> usize {
        match self {
            ModelFamily::MedSam => 1024,
            ModelFamily::LiteMedSam => 256,
        }
    }

    /// The name the CLI and Python use (`medsam`, `lite-medsam`).
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::MedSam => "medsam",
            ModelFamily::LiteMedSam => "lite-medsam",
        }
    }

    /// Parse `medsam` / `lite-medsam` (also `litemedsam`, `lite_medsam`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "medsam" | "medsam-vit-b" | "vit-b" => Some(ModelFamily::MedSam),
            "lite-medsam" | "litemedsam" => Some(ModelFamily::LiteMedSam),
            _ => None,
        }
    }

    /// Which family a state_dict belongs to, judged by its image-encoder keys.
    pub fn detect(sd: &StateDict) -> Option<Self> {
        if sd.tensors.contains_key("image_encoder.pos_embed") {
            Some(ModelFamily::MedSam)
        } else if sd
            .tensors
            .contains_key("image_encoder.patch_embed.seq.0.c.weight")
        {
            Some(ModelFamily::LiteMedSam)
        } else {
            None
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
