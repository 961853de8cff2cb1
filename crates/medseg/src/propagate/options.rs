//! What a 3D segmentation is asked for and gives back, shared by both strategies (the chain
//! rule and SAM 2's memory): options, their checks, the 8-bit volume, the per-pass logits.

use crate::error::{Error, Result};
use crate::segmenter::Prediction;
use crate::volume::{to_u8, value_range, Intensity, LesionStats, Volume};

/// What to do when a slice's mask comes back empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptySlice {
    /// Stop propagating in that direction (default).
    #[default]
    Stop,
    /// Use the key-slice box on the next slice (the official script's behaviour).
    KeyBoxFallback,
}

/// Options of [`Segmenter::segment_volume`].
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// Slice holding the box.
    pub key_slice: usize,
    /// Box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub bbox: [f64; 4],
    /// Slices to cover, inclusive (default: the whole volume).
    pub z_range: Option<(usize, usize)>,
    /// Intensity → 8-bit rule, applied to the whole volume (default by modality).
    pub intensity: Option<Intensity>,
    /// What an empty mask does to the propagation.
    pub on_empty: EmptySlice,
    /// Box growth in pixels at the 256 scale (official: 3).
    pub margin: usize,
    /// Keep only the largest 3D connected component (6-connectivity).
    pub largest_component: bool,
    /// Stop when a slice's mean 8-bit intensity inside the mask differs from the key
    /// slice's by more than this many grey levels (`None`: never).
    pub max_intensity_drift: Option<f64>,
    /// Keep every visited slice's logits at the input resolution
    /// ([`VolumeSegmentation::pass_logits`]); `2 × Z × H × W` floats.
    pub keep_pass_logits: bool,
    /// End a direction after this many consecutive slices with an empty mask (the object is
    /// gone; SAM 2's no-object score empties a mask too). `None` (default): MedSAM2 visits
    /// every slice both ways, as its 3D script; the chain rule stops at the first empty slice
    /// anyway unless [`EmptySlice::KeyBoxFallback`]. See docs/volumes.md for when it is safe.
    pub stop_after_empty: Option<usize>,
}

impl VolumeOptions {
    /// Defaults (see the fields) for a box on `key_slice`.
    pub fn new(key_slice: usize, bbox: [f64; 4]) -> Self {
        Self {
            key_slice,
            bbox,
            z_range: None,
            intensity: None,
            on_empty: EmptySlice::Stop,
            margin: 3,
            largest_component: false,
            max_intensity_drift: Some(40.0),
            keep_pass_logits: false,
            stop_after_empty: None,
        }
    }
}

/// A 3D result.
#[derive(Debug, Clone)]
pub struct VolumeSegmentation {
    /// `nz × ny × nx`, true inside.
    pub mask: Vec<bool>,
    /// Volume in mL, slice range, area, extent.
    pub stats: LesionStats,
    /// Slices the model ran on, in order.
    pub slices_run: Vec<usize>,
    /// The box used on each slice it ran on (image pixels), for overlays.
    pub boxes: Vec<(usize, [f64; 4])>,
    /// The key slice's prediction (its low-res logits, predicted IoU and mask).
    pub key_prediction: Prediction,
    /// With [`VolumeOptions::keep_pass_logits`]: `[2, Z, H, W]` mask logits at the input
    /// resolution, pass 0 the key slice and the slices above it (MedSAM2: its forward pass),
    /// pass 1 the key slice and those below (its backward pass); NaN where a pass did not run
    /// (or ran and stopped: a slice past the drift limit is not part of the result).
    pub pass_logits: Option<Vec<f32>>,
}

/// `[2, Z, H, W]` NaN planes for [`VolumeSegmentation::pass_logits`], when asked for.
pub(crate) fn empty_pass_logits(opts: &VolumeOptions, dims: [usize; 3]) -> Option<Vec<f32>> {
    opts.keep_pass_logits
        .then(|| vec![f32::NAN; 2 * dims.iter().product::<usize>()])
}

/// Write slice `z`'s logits at the input resolution into pass `pass` of `all`.
pub(crate) fn record_pass(
    all: &mut Option<Vec<f32>>,
    pass: usize,
    z: usize,
    dims: [usize; 3],
    logits: Vec<f32>,
) {
    if let Some(all) = all {
        let n = dims[1] * dims[2];
        let at = (pass * dims[0] + z) * n;
        all[at..at + n].copy_from_slice(&logits);
    }
}

/// The drift limit from a user's number of grey levels: 0 disables the rule; a negative or
/// non-finite value is refused (the CLI's `--max-drift`, Python's `max_drift`).
pub fn drift_limit(grey_levels: f64) -> Result<Option<f64>> {
    if grey_levels.is_finite() && grey_levels >= 0.0 {
        Ok((grey_levels > 0.0).then_some(grey_levels))
    } else {
        Err(Error::InvalidOption(format!(
            "max drift {grey_levels}: a number of grey levels >= 0 (0 disables)"
        )))
    }
}

/// The key slice, box, z range and drift limit of `opts` for `vol`; the z range to cover.
pub(crate) fn check_options(vol: &Volume, opts: &VolumeOptions) -> Result<(usize, usize)> {
    let [nz, ny, nx] = vol.dims;
    if opts.key_slice >= nz {
        return Err(Error::InvalidPrompt(format!(
            "key slice {} outside the volume's {nz} slices",
            opts.key_slice
        )));
    }
    crate::prompt::validate_box(opts.bbox, (ny, nx))?;
    let (zlo, zhi) = opts.z_range.unwrap_or((0, nz - 1));
    if zlo > opts.key_slice || zhi < opts.key_slice || zhi >= nz {
        return Err(Error::InvalidPrompt(format!(
            "z range {zlo}-{zhi} must hold the key slice {} and lie inside 0-{}",
            opts.key_slice,
            nz - 1
        )));
    }
    if let Some(d) = opts.max_intensity_drift {
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::InvalidOption(format!(
                "max intensity drift {d}: a positive number of grey levels (or none)"
            )));
        }
    }
    Ok((zlo, zhi))
}

/// The volume in 8 bits by `opts`' rule (default by modality), refused when the key slice
/// comes out as one flat grey level: a window far outside the data (or absurdly wide) leaves
/// the model nothing to see, and it would outline the whole box on every slice.
pub(crate) fn to_u8_checked(vol: &Volume, opts: &VolumeOptions) -> Result<Vec<u8>> {
    let rule = opts
        .intensity
        .unwrap_or(Intensity::default_for(vol.modality));
    let u8vol = to_u8(&vol.data, rule);
    let z = opts.key_slice;
    check_not_flat(
        &u8vol,
        vol,
        z,
        &format!("{rule} maps the whole key slice {z}"),
    )?;
    Ok(u8vol)
}

/// Slice `z` of `u8vol` (`vol` in 8 bits) refused when it is one flat grey level: `what`
/// says which rule made it so, the error gives the slice's values.
pub(crate) fn check_not_flat(u8vol: &[u8], vol: &Volume, z: usize, what: &str) -> Result<()> {
    let n = vol.slice_len();
    let s = &u8vol[z * n..(z + 1) * n];
    if s.iter().all(|&v| v == s[0]) {
        let (lo, hi) = value_range(vol.slice(z));
        return Err(Error::InvalidWindow(format!(
            "{what} (values {lo}..{hi}) to grey level {}: nothing is left to segment; choose a \
             window inside the data",
            s[0]
        )));
    }
    Ok(())
}
