//! Volumes (no Burn): a 3D intensity array with its geometry, intensity windows, MedSAM's CT/MR
//! normalisation to 8 bits, lesion statistics and 3D connected components.
//!
//! Layout: `data[z][y][x]` row-major; a slice `z` is an image with `y` as rows and `x` as
//! columns (for DICOM: rows and columns as stored; for NIfTI: voxel axes `j` and `i`).

use crate::error::{Error, Result};
use crate::preprocess::Image;
pub use crate::source::{DicomSource, Source};

/// What the intensities mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// CT in Hounsfield units.
    Ct,
    /// MR (arbitrary units).
    Mr,
    /// Anything else (e.g. an 8-bit picture).
    Other,
}

/// How a reader's note on the modality it assumed begins (see [`Volume::set_modality`]).
pub(crate) const MODALITY_NOTE: &str = "modality ";

/// A 3D image.
#[derive(Debug, Clone)]
pub struct Volume {
    /// `nz × ny × nx` intensities (HU for CT after rescale slope/intercept).
    pub data: Vec<f32>,
    /// `[nz, ny, nx]`
    pub dims: [usize; 3],
    /// Voxel size in mm, `[z, y, x]` (slice spacing along the slice normal, row spacing, column
    /// spacing), as given by [`Volume::affine`].
    pub spacing: [f64; 3],
    /// Whether the file gave the voxel size (`false`: 1 mm was assumed, e.g. for a PNG, and no
    /// volume in mL can be reported).
    pub spacing_known: bool,
    /// What the values are (sets the default window).
    pub modality: Modality,
    /// Voxel index `(x, y, z, 1)` → world (RAS, mm), NIfTI's `sform` convention. It may be
    /// sheared (a gantry-tilted CT series): the voxel volume is its determinant.
    pub affine: [[f64; 4]; 4],
    /// What the reader found worth telling the user: duplicates dropped, a sheared stack kept,
    /// slices resampled, the modality assumed, objects skipped.
    pub notes: Vec<String>,
    /// Where the volume came from: the NIfTI header an output mask is written with, the DICOM
    /// instances a segmentation object references.
    pub source: Source,
}

impl Volume {
    /// A volume from raw parts (checks sizes; spacing must be positive and finite).
    pub fn new(
        data: Vec<f32>,
        dims: [usize; 3],
        spacing: [f64; 3],
        modality: Modality,
    ) -> Result<Self> {
        if dims.contains(&0) {
            return Err(Error::InvalidImage(format!("empty volume {dims:?}")));
        }
        if data.len() != dims.iter().product::<usize>() {
            return Err(Error::InvalidImage(format!(
                "{} values for a {dims:?} volume",
                data.len()
            )));
        }
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidImage(format!(
                "invalid voxel spacing {spacing:?}"
            )));
        }
        let nonfinite = data.iter().filter(|v| !v.is_finite()).count();
        if nonfinite > 0 {
            return Err(Error::NonFiniteImage(nonfinite));
        }
        let mut affine = [[0.0; 4]; 4];
        affine[0][0] = spacing[2];
        affine[1][1] = spacing[1];
        affine[2][2] = spacing[0];
        affine[3][3] = 1.0;
        Ok(Self {
            data,
            dims,
            spacing,
            spacing_known: true,
            modality,
            affine,
            notes: Vec::new(),
            source: Source::Array,
        })
    }

    /// A one-slice volume from an 8-bit image (grey, or the mean of RGB), spacing 1 mm.
    pub fn from_image(img: &Image) -> Result<Self> {
        let data = img
            .data
            .chunks_exact(img.channels)
            .map(|p| p.iter().map(|&v| v as f32).sum::<f32>() / img.channels as f32)
            .collect();
        let mut vol = Self::new(data, [1, img.height, img.width], [1.0; 3], Modality::Other)?;
        vol.spacing_known = false;
        vol.source = Source::Image;
        Ok(vol)
    }

    /// Say what the intensities are when the file did not (or said wrong): replaces the
    /// modality and drops the reader's note on the one it assumed.
    pub fn set_modality(&mut self, m: Modality) {
        self.modality = m;
        self.notes.retain(|n| !n.starts_with(MODALITY_NOTE));
    }

    /// The NIfTI header of a NIfTI input.
    #[cfg(feature = "nifti")]
    pub fn nifti_header(&self) -> Option<&nifti::NiftiHeader> {
        match &self.source {
            Source::Nifti(h) => Some(h),
            _ => None,
        }
    }

    /// The DICOM images a DICOM input was read from.
    pub fn dicom_source(&self) -> Option<&DicomSource> {
        match &self.source {
            Source::Dicom(d) => Some(d),
            _ => None,
        }
    }

    /// Voxels in one slice.
    pub fn slice_len(&self) -> usize {
        self.dims[1] * self.dims[2]
    }

    /// The intensities of slice `z`.
    pub fn slice(&self, z: usize) -> &[f32] {
        let n = self.slice_len();
        &self.data[z * n..(z + 1) * n]
    }

    /// Volume of one voxel in mL: the determinant of the affine (for an unsheared affine, the
    /// product of the spacings).
    pub fn voxel_ml(&self) -> f64 {
        let a = &self.affine;
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
        det.abs() / 1000.0
    }
}

/// How intensities become the 8-bit images the models see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Intensity {
    /// Clip to `[level − width/2, level + width/2]` and scale to 0–255 (CT).
    Window {
        /// Centre of the window.
        level: f64,
        /// Width of the window.
        width: f64,
    },
    /// MedSAM's MR rule: clip to the 0.5/99.5 percentiles of the foreground (> 0) voxels,
    /// scale to 0–255, background stays 0.
    Percentile,
    /// Scale the full range to 0–255.
    MinMax,
}

impl Intensity {
    /// CT windows by name: `brain` (L40/W80), `stroke` (L40/W40), `soft` (L40/W400),
    /// `bone` (L400/W1800), `lung` (L−600/W1500), `abdomen` (L60/W400), or `L,W`.
    pub fn parse(s: &str) -> Result<Self> {
        let w = |level, width| Ok(Intensity::Window { level, width });
        match s.to_ascii_lowercase().as_str() {
            "brain" => w(40.0, 80.0),
            "stroke" => w(40.0, 40.0),
            "soft" | "soft-tissue" | "soft_tissue" => w(40.0, 400.0),
            "bone" => w(400.0, 1800.0),
            "lung" | "chest" => w(-600.0, 1500.0),
            "abdomen" => w(60.0, 400.0),
            "mr" | "percentile" => Ok(Intensity::Percentile),
            "minmax" => Ok(Intensity::MinMax),
            other => {
                let parts: Vec<&str> = other.split(',').collect();
                let nums: Option<Vec<f64>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
                match nums.as_deref() {
                    // The window's ends must be distinct numbers (a width of 1e-30 at level 40
                    // is no window at all).
                    Some([l, wd])
                        if wd.is_finite()
                            && *wd > 0.0
                            && l.is_finite()
                            && l - wd / 2.0 < l + wd / 2.0 =>
                    {
                        w(*l, *wd)
                    }
                    _ => Err(Error::InvalidWindow(format!(
                        "{s:?}: use brain, stroke, soft, bone, lung, abdomen, mr, minmax or \
                         LEVEL,WIDTH with a finite level and a positive width"
                    ))),
                }
            }
        }
    }

    /// The rule as text that [`Intensity::parse`] reads back: `LEVEL,WIDTH`, `mr` or `minmax`.
    pub fn as_text(self) -> String {
        match self {
            Intensity::Window { level, width } => format!("{level},{width}"),
            Intensity::Percentile => "mr".into(),
            Intensity::MinMax => "minmax".into(),
        }
    }

    /// The default for a modality: brain window for CT (the stroke use case), percentile
    /// for MR, min-max otherwise.
    pub fn default_for(m: Modality) -> Self {
        match m {
            Modality::Ct => Intensity::Window {
                level: 40.0,
                width: 80.0,
            },
            Modality::Mr => Intensity::Percentile,
            Modality::Other => Intensity::MinMax,
        }
    }
}

impl std::fmt::Display for Intensity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Intensity::Window { level, width } => write!(f, "the window L{level}/W{width}"),
            Intensity::Percentile => write!(f, "the MR percentile window"),
            Intensity::MinMax => write!(f, "min-max scaling"),
        }
    }
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Other => "other",
        })
    }
}

impl Modality {
    /// `ct`, `mr` or `other` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ct" => Some(Modality::Ct),
            "mr" | "mri" => Some(Modality::Mr),
            "other" => Some(Modality::Other),
            _ => None,
        }
    }
}

/// `(min, max)` of values (`(f32::MAX, f32::MIN)` for none).
pub fn value_range(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)))
}

/// Percentile by linear interpolation between closest ranks (numpy's default).
fn percentile(sorted: &[f32], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = pos - lo as f64;
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    // numpy's `_lerp`: from the nearer end, so equal neighbours give that value exactly
    // (`a*(1-t) + b*t` gave 255.00000000000003 for a = b = 255, and a clip range lo > hi).
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Map intensities to `uint8` for the whole volume at once (MedSAM's `pre_CT_MR.py`).
pub fn to_u8(values: &[f32], rule: Intensity) -> Vec<u8> {
    match rule {
        Intensity::Window { level, width } => {
            let lo = level - width / 2.0;
            let hi = level + width / 2.0;
            values
                .iter()
                .map(|&v| (((v as f64).clamp(lo, hi) - lo) / (hi - lo) * 255.0) as u8)
                .collect()
        }
        Intensity::Percentile => {
            let mut fg: Vec<f32> = values.iter().copied().filter(|&v| v > 0.0).collect();
            if fg.is_empty() {
                return vec![0; values.len()];
            }
            fg.sort_by(|a, b| a.total_cmp(b));
            let hi = percentile(&fg, 99.5);
            let lo = percentile(&fg, 0.5).min(hi);
            let clipped: Vec<f64> = values.iter().map(|&v| (v as f64).clamp(lo, hi)).collect();
            let mn = clipped.iter().copied().fold(f64::MAX, f64::min);
            let mx = clipped.iter().copied().fold(f64::MIN, f64::max);
            let range = (mx - mn).max(1e-8);
            clipped
                .iter()
                .zip(values)
                .map(|(&c, &v)| {
                    if v == 0.0 {
                        0
                    } else {
                        ((c - mn) / range * 255.0) as u8
                    }
                })
                .collect()
        }
        Intensity::MinMax => {
            let mn = values.iter().copied().fold(f32::MAX, f32::min) as f64;
            let mx = values.iter().copied().fold(f32::MIN, f32::max) as f64;
            let range = (mx - mn).max(1e-8);
            values
                .iter()
                .map(|&v| ((v as f64 - mn) / range * 255.0) as u8)
                .collect()
        }
    }
}

/// How voxels touch in [`largest_component_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// By a face (6 neighbours).
    Faces,
    /// By a face, an edge or a corner (26 neighbours; `skimage.measure.label`'s default in 3D,
    /// which MedSAM2's 3D script uses).
    Full,
}

/// Keep the largest 6-connected component of a `nz × ny × nx` mask.
pub fn largest_component(mask: &mut [bool], dims: [usize; 3]) {
    largest_component_with(mask, dims, Connectivity::Faces);
}

/// Keep the largest component of a `nz × ny × nx` mask (the first in raster order among
/// equals, as `np.argmax` of the label counts picks it).
pub fn largest_component_with(mask: &mut [bool], dims: [usize; 3], conn: Connectivity) {
    let mut label = vec![0u32; mask.len()];
    let mut best = (0u32, 0usize);
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        let mut size = 0;
        label[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            for j in neighbours(i, dims, conn) {
                if mask[j] && label[j] == 0 {
                    label[j] = next;
                    stack.push(j);
                }
            }
        }
        if size > best.1 {
            best = (next, size);
        }
    }
    for (m, l) in mask.iter_mut().zip(&label) {
        *m = *m && *l == best.0;
    }
}

/// The neighbours of voxel `i` inside the volume.
fn neighbours(
    i: usize,
    [nz, ny, nx]: [usize; 3],
    conn: Connectivity,
) -> impl Iterator<Item = usize> {
    let (z, y, x) = (
        (i / (ny * nx)) as i64,
        ((i / nx) % ny) as i64,
        (i % nx) as i64,
    );
    let offsets = (-1i64..=1)
        .flat_map(|dz| (-1i64..=1).flat_map(move |dy| (-1i64..=1).map(move |dx| (dz, dy, dx))));
    offsets.filter_map(move |(dz, dy, dx)| {
        let steps = dz.abs() + dy.abs() + dx.abs();
        let wanted = match conn {
            Connectivity::Faces => steps == 1,
            Connectivity::Full => steps > 0,
        };
        let (zz, yy, xx) = (z + dz, y + dy, x + dx);
        let inside = (0..nz as i64).contains(&zz)
            && (0..ny as i64).contains(&yy)
            && (0..nx as i64).contains(&xx);
        (wanted && inside).then(|| ((zz as usize * ny) + yy as usize) * nx + xx as usize)
    })
}

/// The numbers a reader looks at first.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionStats {
    /// Voxels in the mask.
    pub voxels: usize,
    /// Volume in millilitres (voxel count × voxel volume); `None` when the input gives no voxel
    /// size ([`Volume::spacing_known`]), e.g. a PNG. Areas and extents are then in pixels.
    pub volume_ml: Option<f64>,
    /// First and last slice holding the lesion (`None` when empty).
    pub slice_range: Option<(usize, usize)>,
    /// Largest in-plane area (mm²) and its slice.
    pub max_area_mm2: f64,
    /// Slice of the largest area.
    pub max_area_slice: Option<usize>,
    /// Extent of the lesion's bounding box in mm `[z, y, x]`.
    pub extent_mm: [f64; 3],
    /// Mean intensity inside (HU for CT).
    pub mean_intensity: f64,
}

impl LesionStats {
    /// The statistics of `mask` over `vol`.
    pub fn compute(mask: &[bool], vol: &Volume) -> Self {
        let [nz, ny, nx] = vol.dims;
        let n = ny * nx;
        let mut voxels = 0;
        let mut sum = 0.0;
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        let mut best = (0usize, None);
        for z in 0..nz {
            let mut area = 0;
            for i in 0..n {
                if mask[z * n + i] {
                    area += 1;
                    sum += vol.data[z * n + i] as f64;
                    let idx = [z, i / nx, i % nx];
                    for a in 0..3 {
                        lo[a] = lo[a].min(idx[a]);
                        hi[a] = hi[a].max(idx[a]);
                    }
                }
            }
            voxels += area;
            if area > best.0 {
                best = (area, Some(z));
            }
        }
        let extent_mm = if voxels == 0 {
            [0.0; 3]
        } else {
            std::array::from_fn(|a| (hi[a] - lo[a] + 1) as f64 * vol.spacing[a])
        };
        Self {
            voxels,
            volume_ml: vol.spacing_known.then(|| voxels as f64 * vol.voxel_ml()),
            slice_range: (voxels > 0).then_some((lo[0], hi[0])),
            max_area_mm2: best.0 as f64 * vol.spacing[1] * vol.spacing[2],
            max_area_slice: best.1,
            extent_mm,
            mean_intensity: if voxels > 0 { sum / voxels as f64 } else { 0.0 },
        }
    }
}

impl std::fmt::Display for LesionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (volume, mm) = match self.volume_ml {
            Some(ml) => (format!("volume {ml:.2} mL ({} voxels)", self.voxels), "mm"),
            None => (
                format!("{} voxels (no voxel size in the input: no mL)", self.voxels),
                "px",
            ),
        };
        match self.slice_range {
            None => write!(f, "empty mask (0 voxels)"),
            Some((a, b)) => write!(
                f,
                "{volume} on slices {a}-{b}, largest area {:.1} {mm}² (slice {}), \
                 extent {:.1} x {:.1} x {:.1} {mm}, mean intensity {:.1}",
                self.max_area_mm2,
                self.max_area_slice.unwrap_or(a),
                self.extent_mm[2],
                self.extent_mm[1],
                self.extent_mm[0],
                self.mean_intensity
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        // np.percentile([1, 2, 4, 8], q) for q = 0, 10, 50, 99.5, 100
        let v = [1.0f32, 2.0, 4.0, 8.0];
        for (q, want) in [
            (0.0, 1.0),
            (10.0, 1.3),
            (50.0, 3.0),
            (99.5, 7.94),
            (100.0, 8.0),
        ] {
            assert!((percentile(&v, q) - want).abs() < 1e-12, "q={q}");
        }
        // Equal neighbours give that value exactly, from either side.
        let flat = [255.0f32; 7];
        assert_eq!(percentile(&flat, 0.5), 255.0);
        assert_eq!(percentile(&flat, 99.5), 255.0);
    }

    #[test]
    fn percentile_window_of_a_constant_foreground_does_not_panic() {
        let values = [0.0f32, 255.0, 255.0, 255.0, 255.0];
        assert_eq!(to_u8(&values, Intensity::Percentile), vec![0; 5]);
    }
}
