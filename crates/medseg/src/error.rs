//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong in medseg. Bad input is reported here, never as a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is not a readable PyTorch or safetensors state_dict.
    #[error("invalid checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint is readable but is not the state_dict of the requested model.
    #[error("checkpoint does not match {model}: {details}")]
    WeightsMismatch {
        /// The model asked for.
        model: String,
        /// Every tensor that did not fit.
        details: String,
    },
    /// The checkpoint holds NaN or infinite values.
    #[error("checkpoint tensor {name} holds {count} non-finite values")]
    NonFiniteWeights {
        /// The transfer syntax's name.
        name: String,
        /// How many values.
        count: usize,
    },
    /// No weights for the requested model: the default LiteMedSAM weights are not cached and
    /// could not be fetched, or a model without default weights was given no path.
    #[error("weights unavailable: {0}")]
    WeightsUnavailable(String),
    /// A downloaded or cached weights file has the wrong SHA-256.
    #[error("SHA-256 mismatch for {path}: expected {expected}, got {actual}")]
    Checksum {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The SHA-256 medseg knows.
        expected: String,
        /// The SHA-256 of the file.
        actual: String,
    },
    /// The image is not usable (empty, wrong channel count, unsupported format).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image holds NaN or infinite values.
    #[error("image holds {0} non-finite (NaN or infinite) pixels")]
    NonFiniteImage(usize),
    /// The box prompt is outside the image, degenerate or malformed.
    #[error("invalid box {bbox:?} for a {width}x{height} image: {reason}")]
    InvalidBox {
        /// The box as given.
        bbox: [f64; 4],
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A prompt other than a box is malformed.
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// An image embedding given to a segmenter is not one it can use (shape, family).
    #[error("invalid image embedding: {0}")]
    InvalidEmbedding(String),
    /// An intensity window is malformed, or leaves nothing to see.
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    /// An option value is out of its range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A field of a request given as text ([`crate::SegmentRequest`]: a CLI flag, a Python
    /// keyword, a cohort column, a JSON key) is malformed or out of range. Displayed as
    /// `field "value": what to give`; front-ends spell the field their own way.
    #[error("{field} {reason}")]
    InvalidField {
        /// The field's name (`max_drift`, `key_slice`, ...).
        field: &'static str,
        /// The value, quoted, and what to give instead.
        reason: String,
    },
    /// An output cannot be written where it was asked for (missing directory, the input's own
    /// path, two outputs on one path, a wrong extension).
    #[error("output {path}: {reason}")]
    Output {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image could not be decoded or encoded.
    #[error("image codec error for {path}: {reason}")]
    ImageCodec {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A DICOM file or series could not be read.
    #[error("DICOM {path}: {reason}")]
    Dicom {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The DICOM pixel data uses a transfer syntax medseg cannot decode.
    #[error("DICOM {path}: unsupported transfer syntax {name} ({uid})")]
    UnsupportedTransferSyntax {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The transfer syntax UID.
        uid: String,
        /// The transfer syntax's name.
        name: String,
    },
    /// A NIfTI file could not be read or written.
    #[error("NIfTI {path}: {reason}")]
    Nifti {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The compute backend failed (device lost, out of memory, ...).
    #[error("backend error: {0}")]
    Backend(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A DICOM file or series that cannot be read, and why.
    #[cfg(feature = "dicom")]
    pub(crate) fn dicom(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::Dicom {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Field `name`'s value among text `fields`, trimmed; `None` when missing or empty.
#[cfg(feature = "model")]
pub(crate) fn given<'a>(fields: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    let v = fields
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim());
    v.filter(|v| !v.is_empty())
}

/// `v` parsed by `parse`, its error an [`Error::InvalidField`] quoting the value.
#[cfg(feature = "model")]
pub(crate) fn field<T>(
    v: Option<&str>,
    name: &'static str,
    parse: impl FnOnce(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    v.map(|v| {
        parse(v).map_err(|why| Error::InvalidField {
            field: name,
            reason: format!("{v:?}: {why}"),
        })
    })
    .transpose()
}

/// What a library error says, without its kind's prefix (the field names the kind).
#[cfg(feature = "model")]
pub(crate) fn reason(e: Error) -> String {
    match e {
        Error::InvalidPrompt(s) | Error::InvalidWindow(s) | Error::InvalidOption(s) => s
            .rsplit_once(": ")
            .map_or(s.clone(), |(_, why)| why.to_string()),
        e => e.to_string(),
    }
}
