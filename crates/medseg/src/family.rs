//! The model families and what tells them apart without building them (no Burn: the CLI's
//! `info`, the frame geometry and the fuzz targets use it too).

use crate::weights::StateDict;

/// The supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// MedSAM: SAM ViT-B, 1024×1024 input (`medsam_vit_b.pth`).
    MedSam,
    /// LiteMedSAM: TinyViT encoder, 256×256 input (`lite_medsam.pth`).
    LiteMedSam,
    /// MedSAM2: SAM 2.1 Hiera-Tiny, 512×512 input, memory-based 3D propagation
    /// (`MedSAM2_latest.pt`).
    MedSam2,
    /// Meta's SAM 2.1 Hiera-Tiny at its native 1024×1024 (`sam2.1_hiera_tiny.pt`): MedSAM2's
    /// network and code paths, Meta's input size.
    Sam21Tiny,
}

impl ModelFamily {
    /// Side of the square model input.
    pub fn image_size(self) -> usize {
        match self {
            ModelFamily::MedSam => 1024,
            ModelFamily::LiteMedSam => 256,
            ModelFamily::MedSam2 => 512,
            ModelFamily::Sam21Tiny => 1024,
        }
    }

    /// A SAM 2 family (MedSAM2, SAM 2.1): memory propagation, 16× feature stride.
    pub fn is_sam2(self) -> bool {
        matches!(self, ModelFamily::MedSam2 | ModelFamily::Sam21Tiny)
    }

    /// Side of the decoder's low-res mask logits (and of a mask prompt): 256 for the SAM
    /// families, 128 for MedSAM2 (a quarter of its input).
    pub fn low_res_side(self) -> usize {
        match self {
            ModelFamily::MedSam | ModelFamily::LiteMedSam => 256,
            ModelFamily::MedSam2 | ModelFamily::Sam21Tiny => self.image_size() / 4,
        }
    }

    /// The name the CLI and Python use (`medsam`, `lite-medsam`, `medsam2`).
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::MedSam => "medsam",
            ModelFamily::LiteMedSam => "lite-medsam",
            ModelFamily::MedSam2 => "medsam2",
            ModelFamily::Sam21Tiny => "sam2.1-tiny",
        }
    }

    /// Parse `medsam` / `lite-medsam` (also `litemedsam`, `lite_medsam`) / `medsam2` /
    /// `sam2.1-tiny` (also `sam2.1`, `sam2`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "medsam" | "medsam-vit-b" | "vit-b" => Some(ModelFamily::MedSam),
            "lite-medsam" | "litemedsam" => Some(ModelFamily::LiteMedSam),
            "medsam2" | "medsam-2" => Some(ModelFamily::MedSam2),
            "sam2.1-tiny" | "sam2.1" | "sam2" => Some(ModelFamily::Sam21Tiny),
            _ => None,
        }
    }

    /// Which family a state_dict belongs to, judged by its image-encoder keys (a SAM 2.1 Tiny
    /// layout reads as [`ModelFamily::MedSam2`]: Meta's and MedSAM2's checkpoints share it).
    pub fn detect(sd: &StateDict) -> Option<Self> {
        if sd.tensors.contains_key("image_encoder.pos_embed") {
            Some(ModelFamily::MedSam)
        } else if sd
            .tensors
            .contains_key("image_encoder.patch_embed.seq.0.c.weight")
        {
            Some(ModelFamily::LiteMedSam)
        } else if sd
            .tensors
            .contains_key("image_encoder.trunk.patch_embed.proj.weight")
        {
            Some(ModelFamily::MedSam2)
        } else {
            None
        }
    }
}

impl ModelFamily {
    /// MedSAM2's and Meta's SAM 2.1 Tiny checkpoints share one layout, so a checkpoint cannot
    /// say which input size it was trained at: for `sam2.1-tiny` (and for `medsam2` given a
    /// file named like Meta's), the size assumed and how to choose the other.
    pub fn size_note(self, weights: Option<&std::path::Path>) -> Option<String> {
        let name = weights
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match self {
            ModelFamily::Sam21Tiny => {
                let hint = if name.contains("medsam") {
                    " — this file's name says MedSAM2: if it is, use --model medsam2 (run at \
                     1024, its masks differ)"
                } else {
                    ""
                };
                Some(format!(
                    "sam2.1-tiny runs at 1024x1024 (Meta's SAM 2.1 Tiny); MedSAM2 checkpoints \
                     have the same layout and run at 512x512 with --model medsam2 (the \
                     checkpoint cannot tell them apart){hint}"
                ))
            }
            ModelFamily::MedSam2 if name.contains("sam2.1_hiera") => Some(
                "medsam2 runs at 512x512; this file's name says Meta's SAM 2.1, which runs at \
                 1024x1024 with --model sam2.1-tiny (the checkpoint cannot tell them apart)"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ModelFamily;
    use std::path::Path;

    #[test]
    fn sam2_sizes_are_said_because_checkpoints_cannot_tell() {
        let tiny = ModelFamily::Sam21Tiny;
        let note = tiny
            .size_note(Some(Path::new("sam2.1_hiera_tiny.pt")))
            .unwrap();
        assert!(
            note.contains("1024x1024") && note.contains("--model medsam2"),
            "{note}"
        );
        assert!(!note.contains("this file's name"), "{note}");
        let note = tiny
            .size_note(Some(Path::new("/w/MedSAM2_latest.pt")))
            .unwrap();
        assert!(note.contains("this file's name says MedSAM2"), "{note}");
        let m2 = ModelFamily::MedSam2;
        assert_eq!(m2.size_note(Some(Path::new("MedSAM2_latest.pt"))), None);
        let note = m2
            .size_note(Some(Path::new("sam2.1_hiera_tiny.pt")))
            .unwrap();
        assert!(note.contains("--model sam2.1-tiny"), "{note}");
        assert_eq!(ModelFamily::LiteMedSam.size_note(None), None);
    }
}
