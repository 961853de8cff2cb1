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

/// How a family's official script puts an image into its model input and reads masks back:
/// what [`crate::frame::Frame`] matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// MedSAM (`MedSAM_Inference.py`): stretched to the square (cubic spline, anti-aliased),
    /// min-max; prompts scaled per axis in `f64`; sigmoid, bilinear, `> 0.5`.
    Stretch,
    /// LiteMedSAM (`CVPR24_LiteMedSAM_infer.py`): longest side to the input (`INTER_AREA`),
    /// zero-padded; boxes floored; logits cropped, bilinear, sigmoid `> 0.5`; the chain rule.
    LongestSide,
    /// SAM 2 (`medsam2_infer_3D_CT.py`): stretched by Pillow's bicubic, ImageNet mean/std;
    /// prompts scaled per axis in `f32`; bilinear, `> 0`; memory propagation.
    Sam2,
}

/// The network a family's checkpoint fills (what `model::build` builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// SAM's ViT-B image encoder, prompt encoder and mask decoder.
    SamVitB,
    /// LiteMedSAM's TinyViT image encoder with SAM's prompt encoder and mask decoder.
    SamTinyVit,
    /// SAM 2.1 Hiera-Tiny with its memory attention and memory encoder.
    Sam2HieraTiny,
}

/// Where a family's weights come from when no path is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultWeights {
    /// The official LiteMedSAM weights in medseg's cache (`medseg fetch-weights`).
    LiteMedSamCache,
    /// None: the text says which file to pass.
    None(&'static str),
}

/// Everything medseg knows of a family, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilySpec {
    /// The name the CLI, Python and cohort files use.
    pub name: &'static str,
    /// Other spellings accepted (after lower-casing, `_` read as `-`).
    pub aliases: &'static [&'static str],
    /// One line for `--help`.
    pub summary: &'static str,
    /// Side of the square model input.
    pub image_size: usize,
    /// Side of the low-res mask logits (and of a mask prompt).
    pub low_res: usize,
    /// How images and masks map into the model.
    pub geometry: Geometry,
    /// The network.
    pub architecture: Architecture,
    /// Weights without a path.
    pub default_weights: DefaultWeights,
    /// A state_dict key only this family's checkpoints have (`None`: it shares another's).
    pub detect_key: Option<&'static str>,
}

const LITE_MEDSAM: FamilySpec = FamilySpec {
    name: "lite-medsam",
    aliases: &["litemedsam"],
    summary: "LiteMedSAM (TinyViT, 256x256 input); default weights fetched and cached",
    image_size: 256,
    low_res: 256,
    geometry: Geometry::LongestSide,
    architecture: Architecture::SamTinyVit,
    default_weights: DefaultWeights::LiteMedSamCache,
    detect_key: Some("image_encoder.patch_embed.seq.0.c.weight"),
};

const MEDSAM: FamilySpec = FamilySpec {
    name: "medsam",
    aliases: &["medsam-vit-b", "vit-b"],
    summary: "MedSAM (SAM ViT-B, 1024x1024 input); needs --weights medsam_vit_b.pth",
    image_size: 1024,
    low_res: 256,
    geometry: Geometry::Stretch,
    architecture: Architecture::SamVitB,
    default_weights: DefaultWeights::None(
        "MedSAM (ViT-B) has no default weights: pass the path of medsam_vit_b.pth",
    ),
    detect_key: Some("image_encoder.pos_embed"),
};

const MEDSAM2: FamilySpec = FamilySpec {
    name: "medsam2",
    aliases: &["medsam-2"],
    summary: "MedSAM2 (SAM 2.1 Hiera-Tiny, 512x512 input, memory-based 3D \
              propagation); needs --weights MedSAM2_latest.pt",
    image_size: 512,
    low_res: 128,
    geometry: Geometry::Sam2,
    architecture: Architecture::Sam2HieraTiny,
    default_weights: DefaultWeights::None(
        "MedSAM2 has no default weights (no package registry hosts them): pass the path \
         of MedSAM2_latest.pt, from the MedSAM2 authors' release (see docs/medsam2.md)",
    ),
    detect_key: Some("image_encoder.trunk.patch_embed.proj.weight"),
};

const SAM21_TINY: FamilySpec = FamilySpec {
    name: "sam2.1-tiny",
    aliases: &["sam2.1", "sam2"],
    summary: "Meta's SAM 2.1 Hiera-Tiny at 1024x1024 (MedSAM2's network and \
              propagation); needs --weights sam2.1_hiera_tiny.pt",
    image_size: 1024,
    low_res: 256,
    geometry: Geometry::Sam2,
    architecture: Architecture::Sam2HieraTiny,
    default_weights: DefaultWeights::None(
        "SAM 2.1 Tiny has no default weights: pass the path of sam2.1_hiera_tiny.pt, \
         from Meta's SAM 2.1 release (see docs/medsam2.md)",
    ),
    detect_key: None, // MedSAM2's layout: `detect` reads it as MedSAM2
};

impl ModelFamily {
    /// Every family, in the order the CLI and the docs list them.
    pub const ALL: [ModelFamily; 4] = [
        ModelFamily::LiteMedSam,
        ModelFamily::MedSam,
        ModelFamily::MedSam2,
        ModelFamily::Sam21Tiny,
    ];

    /// What medseg knows of this family.
    pub fn spec(self) -> &'static FamilySpec {
        match self {
            ModelFamily::LiteMedSam => &LITE_MEDSAM,
            ModelFamily::MedSam => &MEDSAM,
            ModelFamily::MedSam2 => &MEDSAM2,
            ModelFamily::Sam21Tiny => &SAM21_TINY,
        }
    }

    /// Side of the square model input.
    pub fn image_size(self) -> usize {
        self.spec().image_size
    }

    /// A SAM 2 family (MedSAM2, SAM 2.1): memory propagation, 16× feature stride.
    pub fn is_sam2(self) -> bool {
        self.spec().architecture == Architecture::Sam2HieraTiny
    }

    /// Side of the decoder's low-res mask logits (and of a mask prompt): 256 for the SAM
    /// families, 128 for MedSAM2 (a quarter of its input).
    pub fn low_res_side(self) -> usize {
        self.spec().low_res
    }

    /// The name the CLI, Python and cohort files use (`lite-medsam`, `medsam`, `medsam2`,
    /// `sam2.1-tiny`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parse a family's name or one of its aliases (any case, `_` read as `-`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|f| {
            let spec = f.spec();
            spec.name == s || spec.aliases.contains(&s.as_str())
        })
    }

    /// The names [`ModelFamily::parse`] takes, for messages: `lite-medsam, medsam, ...`.
    pub fn names() -> String {
        Self::ALL.map(|f| f.name()).join(", ")
    }

    /// Which family a state_dict belongs to, judged by its image-encoder keys (a SAM 2.1 Tiny
    /// layout reads as [`ModelFamily::MedSam2`]: Meta's and MedSAM2's checkpoints share it).
    pub fn detect(sd: &StateDict) -> Option<Self> {
        Self::ALL.into_iter().find(|f| {
            f.spec()
                .detect_key
                .is_some_and(|k| sd.tensors.contains_key(k))
        })
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
    fn every_family_has_one_row_and_its_names_parse_back() {
        for f in ModelFamily::ALL {
            let spec = f.spec();
            assert_eq!(ModelFamily::parse(spec.name), Some(f));
            assert_eq!(ModelFamily::parse(&spec.name.to_uppercase()), Some(f));
            for a in spec.aliases {
                assert_eq!(ModelFamily::parse(a), Some(f), "{a}");
            }
            assert!(ModelFamily::names().contains(spec.name));
            assert_eq!(f.is_sam2(), spec.geometry == super::Geometry::Sam2);
        }
        assert_eq!(
            ModelFamily::parse("lite_medsam"),
            Some(ModelFamily::LiteMedSam)
        );
        assert_eq!(ModelFamily::parse("sam3"), None);
        assert_eq!(ModelFamily::MedSam2.low_res_side(), 128);
        assert_eq!(ModelFamily::Sam21Tiny.low_res_side(), 256);
    }

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
