//! What a mask is and what made it (no Burn, no DICOM): the segment description that a DICOM
//! Segmentation object carries — label, coded category and type, algorithm — with medseg's
//! defaults.
//!
//! Codes (SNOMED CT, scheme `SCT`, as DICOM's context groups CID 7150 "Segmentation Property
//! Category" and CID 7159 "Lesion Segmentation Type" list them):
//!
//! | what | code | meaning |
//! |---|---|---|
//! | category (default) | SCT 49755003 | Morphologically Abnormal Structure |
//! | type `lesion` (default) | SCT 52988006 | Lesion |
//! | type `infarct` | SCT 55641003 | Infarct |

use crate::error::{Error, Result};

/// A coded concept: (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// CodeValue, e.g. `55641003`.
    pub value: String,
    /// CodingSchemeDesignator, e.g. `SCT` (SNOMED CT) or `DCM`.
    pub scheme: String,
    /// CodeMeaning, e.g. `Infarct`.
    pub meaning: String,
}

impl Code {
    /// A code from its three parts.
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Code {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }

    /// SCT 49755003 "Morphologically Abnormal Structure": the category of a lesion.
    pub fn morphologically_abnormal_structure() -> Self {
        Code::new("49755003", "SCT", "Morphologically Abnormal Structure")
    }

    /// SCT 52988006 "Lesion".
    pub fn lesion() -> Self {
        Code::new("52988006", "SCT", "Lesion")
    }

    /// SCT 55641003 "Infarct".
    pub fn infarct() -> Self {
        Code::new("55641003", "SCT", "Infarct")
    }

    /// A segment type by name: `lesion`, `infarct`, or `SCHEME:VALUE:MEANING` (e.g.
    /// `SCT:86049000:Malignant neoplasm`).
    pub fn parse_type(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lesion" => return Ok(Code::lesion()),
            "infarct" => return Ok(Code::infarct()),
            _ => {}
        }
        let parts: Vec<&str> = s.splitn(3, ':').map(str::trim).collect();
        match parts[..] {
            [scheme, value, meaning]
                if !scheme.is_empty() && !value.is_empty() && !meaning.is_empty() =>
            {
                Ok(Code::new(value, scheme, meaning))
            }
            _ => Err(Error::InvalidOption(format!(
                "segment type {s:?}: use lesion, infarct, or SCHEME:VALUE:MEANING \
                 (e.g. SCT:55641003:Infarct)"
            ))),
        }
    }
}

/// How a segment was made (DICOM SegmentAlgorithmType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlgorithmType {
    /// The model alone, from the user's prompts (a box on one slice).
    #[default]
    Automatic,
    /// The model with the user's corrections (edited prompts).
    SemiAutomatic,
    /// Drawn by hand.
    Manual,
}

impl AlgorithmType {
    /// The DICOM term.
    pub fn as_dicom(self) -> &'static str {
        match self {
            AlgorithmType::Automatic => "AUTOMATIC",
            AlgorithmType::SemiAutomatic => "SEMIAUTOMATIC",
            AlgorithmType::Manual => "MANUAL",
        }
    }
}

/// One segment (one object) of a segmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// SegmentLabel, e.g. `lesion`.
    pub label: String,
    /// SegmentedPropertyCategoryCodeSequence.
    pub category: Code,
    /// SegmentedPropertyTypeCodeSequence.
    pub property_type: Code,
    /// SegmentAlgorithmType.
    pub algorithm_type: AlgorithmType,
    /// SegmentAlgorithmName, e.g. `medseg MedSAM2`.
    pub algorithm_name: String,
    /// The algorithm's version: medseg's version and the weights' SHA-256 prefix.
    pub algorithm_version: String,
}

impl Default for Segment {
    /// `lesion`, Morphologically Abnormal Structure / Lesion, AUTOMATIC, medseg's version.
    fn default() -> Self {
        Segment {
            label: "lesion".into(),
            category: Code::morphologically_abnormal_structure(),
            property_type: Code::lesion(),
            algorithm_type: AlgorithmType::Automatic,
            algorithm_name: "medseg".into(),
            algorithm_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl Segment {
    /// A segment made by medseg with `family` (e.g. `MedSAM2`) and weights of the given
    /// SHA-256 (the first 12 hex digits are kept).
    pub fn by_model(family: &str, weights_sha256: &str) -> Self {
        let sha: String = weights_sha256.chars().take(12).collect();
        Segment {
            algorithm_name: format!("medseg {family}"),
            algorithm_version: format!("{} weights-sha256:{sha}", env!("CARGO_PKG_VERSION")),
            ..Segment::default()
        }
    }
}

/// What a mask writer is told besides the mask: the segment, and for a DICOM SEG whether
/// frames without mask pixels are written too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskInfo {
    /// The object the mask holds.
    pub segment: Segment,
    /// DICOM SEG: a frame for every slice (default: only slices holding mask pixels).
    pub all_frames: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_types_parse_by_name_and_by_code() {
        assert_eq!(Code::parse_type("Infarct").unwrap(), Code::infarct());
        assert_eq!(Code::parse_type("lesion").unwrap().value, "52988006");
        let c = Code::parse_type("SCT:86049000:Malignant neoplasm").unwrap();
        assert_eq!((c.scheme.as_str(), c.value.as_str()), ("SCT", "86049000"));
        assert_eq!(c.meaning, "Malignant neoplasm");
        for bad in ["tumour", "SCT:123", "SCT::x", ":1:x"] {
            let e = Code::parse_type(bad).unwrap_err().to_string();
            assert!(e.contains("SCHEME:VALUE:MEANING"), "{bad}: {e}");
        }
        let s = Segment::by_model("MedSAM2", "0123456789abcdef0123");
        assert_eq!(s.algorithm_name, "medseg MedSAM2");
        assert!(s.algorithm_version.ends_with("weights-sha256:0123456789ab"));
    }
}
