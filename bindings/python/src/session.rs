//! `medseg.VolumeSession`: the library's 3D session with SAM 2's video-predictor names,
//! numpy in and out.

use std::sync::Mutex;

use ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{err, request, source_volume, MedsegError, Segmenter};

/// Prompts on any slice for any object of a volume, propagation and re-propagation: SAM 2's
/// video predictor (`sam2==1.1.0`) on MedSAM2; the chain rule from every prompted slice on
/// MedSAM and LiteMedSAM. Slices are `frame_idx`, objects `obj_id`
/// (1..65535), coordinates image pixels (x, y).
#[pyclass(frozen, module = "medseg._medseg")]
pub struct VolumeSession {
    inner: Mutex<medseg::VolumeSession>,
    dims: [usize; 3],
}

impl VolumeSession {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut medseg::VolumeSession) -> medseg::Result<T>,
    ) -> PyResult<T> {
        let mut s = self
            .inner
            .lock()
            .map_err(|_| MedsegError::new_err("session lock poisoned"))?;
        f(&mut s).map_err(err)
    }

    fn mask_array<'py>(
        &self,
        py: Python<'py>,
        mask: Vec<bool>,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let a = Array2::from_shape_vec((self.dims[1], self.dims[2]), mask)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
        Ok(a.into_pyarray(py))
    }
}

#[pymethods]
impl VolumeSession {
    #[new]
    #[pyo3(signature = (segmenter, source, spacing=None, modality=None, window=None, corrections_as_conditioning=true, feature_cache_mib=1024, uneven_slices="error", max_drift=40.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        segmenter: &Segmenter,
        source: &Bound<'_, PyAny>,
        spacing: Option<[f64; 3]>,
        modality: Option<&str>,
        window: Option<&str>,
        corrections_as_conditioning: bool,
        feature_cache_mib: usize,
        uneven_slices: &str,
        max_drift: f64,
    ) -> PyResult<Self> {
        let req = request(&[
            ("modality", modality.map(str::to_string)),
            ("window", window.map(str::to_string)),
            ("max_drift", Some(max_drift.to_string())),
        ])?;
        let vol = source_volume(py, source, spacing, &req, uneven_slices)?;
        let opts = medseg::SessionOptions {
            intensity: req.window,
            corrections_as_conditioning,
            feature_cache_mib,
            max_intensity_drift: medseg::propagate::drift_limit(max_drift).map_err(err)?,
            ..Default::default()
        };
        let dims = vol.dims;
        let inner = medseg::VolumeSession::new(segmenter.loaded(), &vol, &opts).map_err(err)?;
        Ok(Self {
            inner: Mutex::new(inner),
            dims,
        })
    }

    /// Clicks (`points` (N, 2) x, y with `labels` 1 positive / 0 negative) and/or a `box`
    /// (x0, y0, x1, y1) on slice `frame_idx` for `obj_id`; returns the object's mask there.
    #[pyo3(signature = (frame_idx, obj_id, points=None, labels=None, clear_old_points=true, box_=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_new_points_or_box<'py>(
        &self,
        py: Python<'py>,
        frame_idx: usize,
        obj_id: u32,
        points: Option<Vec<[f64; 2]>>,
        labels: Option<Vec<i64>>,
        clear_old_points: bool,
        box_: Option<[f64; 4]>,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let clicks: Vec<([f64; 2], i64)> = match (points, labels) {
            (Some(p), Some(l)) if p.len() == l.len() => p.into_iter().zip(l).collect(),
            (None, None) => Vec::new(),
            _ => {
                return Err(PyValueError::new_err(
                    "points and labels must be given together, one label per point",
                ))
            }
        };
        let pred = py.detach(|| {
            self.with(|s| {
                s.add_new_points_or_box(frame_idx, obj_id, &clicks, box_, clear_old_points)
            })
        })?;
        self.mask_array(py, pred.mask)
    }

    /// A (Y, X) boolean `mask` as the object on slice `frame_idx`; returns the mask kept.
    fn add_new_mask<'py>(
        &self,
        py: Python<'py>,
        frame_idx: usize,
        obj_id: u32,
        mask: PyReadonlyArray2<'_, bool>,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let m: Vec<bool> = mask.as_array().iter().copied().collect();
        let shape = mask.as_array().shape().to_vec();
        if shape != [self.dims[1], self.dims[2]] {
            return Err(PyValueError::new_err(format!(
                "mask of shape {shape:?} on slices of {:?}",
                [self.dims[1], self.dims[2]]
            )));
        }
        let pred = py.detach(|| self.with(|s| s.add_new_mask(frame_idx, obj_id, &m)))?;
        self.mask_array(py, pred.mask)
    }

    /// Propagate from `start_frame_idx` (default: the earliest prompted slice) over at most
    /// `max_frame_num_to_track` slices, towards lower slices with `reverse`; returns the
    /// slices visited.
    #[pyo3(signature = (start_frame_idx=None, max_frame_num_to_track=None, reverse=false))]
    fn propagate_in_video(
        &self,
        py: Python<'_>,
        start_frame_idx: Option<usize>,
        max_frame_num_to_track: Option<usize>,
        reverse: bool,
    ) -> PyResult<Vec<usize>> {
        let dir = if reverse {
            medseg::Direction::Backward
        } else {
            medseg::Direction::Forward
        };
        py.detach(|| {
            self.with(|s| s.propagate(dir, start_frame_idx, max_frame_num_to_track, &mut |_| {}))
        })
    }

    /// Remove `obj_id`'s prompts on slice `frame_idx`.
    fn clear_all_prompts_in_frame(&self, frame_idx: usize, obj_id: u32) -> PyResult<()> {
        self.with(|s| s.clear_all_prompts_in_slice(frame_idx, obj_id))
    }

    /// Remove an object.
    fn remove_object(&self, obj_id: u32) -> PyResult<()> {
        self.with(|s| s.remove_object(obj_id))
    }

    /// Remove every object and prompt (cached image features stay).
    fn reset_state(&self) -> PyResult<()> {
        self.with(|s| {
            s.reset_state();
            Ok(())
        })
    }

    /// Object ids, in the order they were first prompted.
    #[getter]
    fn obj_ids(&self) -> PyResult<Vec<u32>> {
        self.with(|s| Ok(s.object_ids()))
    }

    /// `{obj_id: (Z, Y, X) bool mask}`.
    fn masks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for id in self.obj_ids()? {
            let m = self.with(|s| s.object_mask(id))?;
            let a = Array3::from_shape_vec(self.dims, m)
                .map_err(|e| MedsegError::new_err(e.to_string()))?;
            d.set_item(id, a.into_pyarray(py))?;
        }
        Ok(d)
    }

    /// (Z, Y, X) uint16: each voxel the id of the object with the highest logit there, 0 none.
    fn label_map<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray3<u16>>> {
        let l = self.with(|s| Ok(s.label_map()))?;
        let a = Array3::from_shape_vec(self.dims, l)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
        Ok(a.into_pyarray(py))
    }

    /// `{obj_id: volume in mL}` (None without a voxel size).
    fn volumes_ml<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for id in self.obj_ids()? {
            d.set_item(id, self.with(|s| s.stats(id))?.volume_ml)?;
        }
        Ok(d)
    }

    /// The object's low-res logits on a slice ((128, 128) float32), None where it has none.
    fn logits<'py>(
        &self,
        py: Python<'py>,
        obj_id: u32,
        frame_idx: usize,
    ) -> PyResult<Option<Bound<'py, PyArray2<f32>>>> {
        let Some(p) = self.with(|s| Ok(s.slice_prediction(obj_id, frame_idx)))? else {
            return Ok(None);
        };
        let side = (p.low_res_logits.len() as f64).sqrt() as usize;
        let a = Array2::from_shape_vec((side, side), p.low_res_logits)
            .map_err(|e| MedsegError::new_err(e.to_string()))?;
        Ok(Some(a.into_pyarray(py)))
    }
}
