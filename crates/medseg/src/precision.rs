//! The arithmetic the image encoder runs in (no Burn: the CLI and Python parse it too).

/// The precision of the image encoder's matrix products.
///
/// * [`Precision::F32`] (the default): everything in `f32`, exact to the official PyTorch code
///   (the parity tests).
/// * [`Precision::Bf16`] (opt-in, for speed): the image encoder's linear layers and attention
///   products — and MedSAM2's memory attention — take their inputs (and weights) rounded to
///   bfloat16 and sum the products in `f32` (AVX-512 BF16's `vdpbf16ps`); norms, softmax,
///   biases, convolutions, the prompt encoder and the mask decoder stay in `f32`, and so does
///   every output. Needs the CPU backend on a CPU
///   with AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake, Sapphire Rapids and later;
///   AMX tiles where present), and runs only where a one-time check finds it faster than
///   `f32` (`model::cpu`); elsewhere the segmenter runs in `f32` and says why once on stderr
///   (`Segmenter::precision` tells which it runs). Masks differ slightly from `f32`'s:
///   docs/precision.md has the measured differences per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `f32` throughout.
    #[default]
    F32,
    /// bf16 weights and inputs, `f32` sums, in the image encoder's matrix products.
    Bf16,
}

impl Precision {
    /// `f32` / `bf16`, as the CLI and Python spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Parse `f32` (also `fp32`, `float32`) or `bf16` (also `bfloat16`), any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Precision::F32),
            "bf16" | "bfloat16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Self::parse(s).ok_or_else(|| {
            crate::Error::InvalidOption(format!("precision {s:?}: expected f32 or bf16"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Precision;

    #[test]
    fn parses_both_spellings_and_refuses_others() {
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!(Precision::default(), Precision::F32);
        let e = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("\"fp16\"") && e.contains("f32 or bf16"), "{e}");
    }
}
