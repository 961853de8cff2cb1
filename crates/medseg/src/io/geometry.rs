//! The geometry of a stack of DICOM image planes (the files of a series, or the frames of an
//! enhanced multi-frame object), checked the way a careful converter does before one affine is
//! written for all of them (no Burn, no DICOM: positions and sizes in, an order and an affine
//! column out).
//!
//! - every plane must share rows × columns, pixel spacing and orientation;
//! - positions are needed on every plane or on none (then InstanceNumber orders them);
//! - planes at one position are duplicates: kept once when they are the same instance or hold
//!   the same pixels, refused otherwise;
//! - steps along the slice normal must be regular (a missing slice, uneven spacing): refused
//!   unless [`UnevenSlices`] opts into resampling or into keeping the slices as they are;
//! - origins that drift in-plane by a constant step (gantry tilt, sheared stacks) keep that
//!   shear in the affine, so every slice lands where it was scanned.

/// What to do with slices whose positions are not evenly spaced along the slice normal (a
/// missing slice, a duplicated position removed, uneven spacing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnevenSlices {
    /// Refuse the series, naming the positions (default).
    #[default]
    Error,
    /// Interpolate (linearly, along the normal) onto a regular grid at the median step.
    Resample,
    /// Keep the slices as they are with the median step in the affine, and say so: slices
    /// past an irregular step are then misplaced by the amount reported.
    AsIs,
}

impl UnevenSlices {
    /// `error`, `resample` or `as-is`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Self::Error),
            "resample" => Some(Self::Resample),
            "as-is" | "as_is" | "asis" => Some(Self::AsIs),
            _ => None,
        }
    }
}

/// One image plane: where it is and how it is sampled.
#[derive(Debug, Clone)]
pub(crate) struct Plane {
    /// How the user finds it: a file name, or "file frame k".
    pub label: String,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub rows: usize,
    pub cols: usize,
    pub pixel_spacing: Option<(f64, f64)>,
    pub instance: Option<i64>,
    pub uid: Option<String>,
}

/// An output slice between two slices (indices into [`Stack::order`]): the weight of the second.
pub(crate) type Blend = (usize, usize, f64);

/// How the planes become a volume.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stack {
    /// Planes in slice order (duplicates dropped).
    pub order: Vec<usize>,
    /// Slice spacing along the normal (mm); `None` without positions.
    pub spacing: Option<f64>,
    /// World (LPS) step from one slice to the next: the normal × spacing, plus the in-plane
    /// shift of a sheared stack. `None` without positions.
    pub step: Option<[f64; 3]>,
    /// With [`UnevenSlices::Resample`] and irregular steps: how to make each output slice.
    pub resample: Option<Vec<Blend>>,
    /// What the user should be told (duplicates dropped, shear kept, slices resampled).
    pub notes: Vec<String>,
}

/// Orientation cosines may differ by this much (DS rounding) and still be one orientation.
const ORIENTATION_TOL: f64 = 1e-3;
/// Pixel spacings (mm) may differ by this much.
const SPACING_TOL: f64 = 1e-3;

/// The tolerance for slice steps (mm): 1 % of the median step, at least 0.02 mm (positions
/// written with two decimals differ from a regular grid by up to 0.01 mm).
pub(crate) fn step_tolerance(median: f64) -> f64 {
    (0.01 * median).max(0.02)
}

pub(crate) fn normal(o: &[f64; 6]) -> [f64; 3] {
    [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn fmt3(p: [f64; 3]) -> String {
    format!("({:.2}, {:.2}, {:.2})", p[0], p[1], p[2])
}

/// Arrange planes into slices. `same_pixels(i, j)` tells whether planes `i` and `j` hold
/// identical pixel data. Errors are messages naming the planes concerned.
pub(crate) fn arrange(
    planes: &[Plane],
    policy: UnevenSlices,
    same_pixels: impl Fn(usize, usize) -> bool,
) -> Result<Stack, String> {
    check_values(&planes[0])?;
    check_consistent(planes)?;
    let positioned = planes.iter().filter(|p| p.position.is_some()).count();
    let oriented = planes.iter().all(|p| p.orientation.is_some());
    if positioned == 0 || !oriented {
        return Ok(unpositioned(planes, positioned));
    }
    if positioned < planes.len() {
        let missing: Vec<&str> = planes
            .iter()
            .filter(|p| p.position.is_none())
            .map(|p| p.label.as_str())
            .collect();
        return Err(format!(
            "ImagePositionPatient is missing in {} of {} images ({}); their place in the \
             stack is unknown (remove them, or fix the export)",
            missing.len(),
            planes.len(),
            list(&missing)
        ));
    }
    let n = normal(&planes[0].orientation.unwrap_or_default());
    let key = |i: usize| dot(planes[i].position.unwrap_or_default(), n);
    let mut order: Vec<usize> = (0..planes.len()).collect();
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    let mut notes = Vec::new();
    let order = drop_duplicates(planes, order, &key, &same_pixels, &mut notes)?;
    if order.len() == 1 {
        return Ok(Stack {
            order,
            spacing: None,
            step: None,
            resample: None,
            notes,
        });
    }
    let keys: Vec<f64> = order.iter().map(|&i| key(i)).collect();
    let median = median_step(&keys);
    let resample = check_steps(planes, &order, &keys, median, policy, &mut notes)?;
    let shift = in_plane_shift(planes, &order, n, &keys, median, policy, &mut notes)?;
    Ok(Stack {
        order,
        spacing: Some(median),
        step: Some(std::array::from_fn(|a| n[a] * median + shift[a])),
        resample,
        notes,
    })
}

/// At most three names, then a count.
fn list(names: &[&str]) -> String {
    match names.len() {
        0..=3 => names.join(", "),
        k => format!("{}, … and {} more", names[..3].join(", "), k - 3),
    }
}

/// Finite positions, and an orientation of two orthogonal unit vectors (else the normal, and
/// every position along it, means nothing).
fn check_values(p: &Plane) -> Result<(), String> {
    if let Some(pos) = p.position {
        if !pos.iter().all(|v| v.is_finite()) {
            return Err(format!("{} has ImagePositionPatient {pos:?}", p.label));
        }
    }
    if let Some(o) = p.orientation {
        let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        let unit = |v: [f64; 3]| (norm(v) - 1.0).abs() <= 0.01;
        if !(o.iter().all(|v| v.is_finite()) && unit(r) && unit(c) && dot(r, c).abs() <= 0.01) {
            return Err(format!(
                "{} has ImageOrientationPatient {o:?}, not two orthogonal unit vectors",
                p.label
            ));
        }
    }
    Ok(())
}

/// Every plane must have the first plane's size, pixel spacing and orientation.
fn check_consistent(planes: &[Plane]) -> Result<(), String> {
    let first = &planes[0];
    for p in &planes[1..] {
        check_values(p)?;
        let what = if (p.rows, p.cols) != (first.rows, first.cols) {
            Some(format!(
                "{}×{} pixels, {} has {}×{}",
                p.rows, p.cols, first.label, first.rows, first.cols
            ))
        } else if !close_pairs(p.pixel_spacing, first.pixel_spacing, SPACING_TOL) {
            Some(format!(
                "pixel spacing {} mm, {} has {}",
                shown(p.pixel_spacing.map(|(a, b)| [a, b])),
                first.label,
                shown(first.pixel_spacing.map(|(a, b)| [a, b]))
            ))
        } else if !close_orientation(p.orientation, first.orientation) {
            Some(format!(
                "ImageOrientationPatient {}, {} has {}",
                shown(p.orientation),
                first.label,
                shown(first.orientation)
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(format!(
                "{} has {what}: one series must share size, spacing and orientation (several \
                 series or a localizer in one folder?)",
                p.label
            ));
        }
    }
    Ok(())
}

/// `[a, b, …]`, or "none".
fn shown<const N: usize>(v: Option<[f64; N]>) -> String {
    v.map(|v| format!("{v:?}")).unwrap_or_else(|| "none".into())
}

fn close_pairs(a: Option<(f64, f64)>, b: Option<(f64, f64)>, tol: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a.0 - b.0).abs() <= tol && (a.1 - b.1).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

fn close_orientation(a: Option<[f64; 6]>, b: Option<[f64; 6]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= ORIENTATION_TOL),
        (None, None) => true,
        _ => false,
    }
}

/// No positions: InstanceNumber order (file or frame order where absent), no geometry.
fn unpositioned(planes: &[Plane], positioned: usize) -> Stack {
    let mut order: Vec<usize> = (0..planes.len()).collect();
    order.sort_by_key(|&i| planes[i].instance.unwrap_or(i64::MAX));
    let why = if positioned == 0 {
        "no image holds ImagePositionPatient"
    } else {
        "ImageOrientationPatient is missing"
    };
    let notes = if planes.len() > 1 {
        vec![format!(
            "{why}: slices ordered by InstanceNumber, slice spacing from the header \
             (SpacingBetweenSlices or SliceThickness); the output affine has no patient position"
        )]
    } else {
        Vec::new()
    };
    Stack {
        order,
        spacing: None,
        step: None,
        resample: None,
        notes,
    }
}

/// Planes at one position: one kept when they are the same instance or hold the same pixels,
/// else an error naming both.
fn drop_duplicates(
    planes: &[Plane],
    order: Vec<usize>,
    key: &impl Fn(usize) -> f64,
    same_pixels: &impl Fn(usize, usize) -> bool,
    notes: &mut Vec<String>,
) -> Result<Vec<usize>, String> {
    let mut kept: Vec<usize> = Vec::with_capacity(order.len());
    for i in order {
        let Some(&last) = kept.last() else {
            kept.push(i);
            continue;
        };
        if (key(i) - key(last)).abs() > step_tolerance(0.0) {
            kept.push(i);
            continue;
        }
        let (a, b) = (&planes[last], &planes[i]);
        let same_uid = a.uid.is_some() && a.uid == b.uid;
        if same_uid || same_pixels(last, i) {
            notes.push(format!(
                "{} duplicates {} ({} at {}): kept once",
                b.label,
                a.label,
                if same_uid {
                    "same SOPInstanceUID"
                } else {
                    "same pixels"
                },
                fmt3(b.position.unwrap_or_default())
            ));
        } else {
            return Err(format!(
                "{} and {} are both at position {} with different pixels (two acquisitions \
                 or echoes in one folder? give one volume per folder)",
                a.label,
                b.label,
                fmt3(b.position.unwrap_or_default())
            ));
        }
    }
    Ok(kept)
}

fn median_step(keys: &[f64]) -> f64 {
    let mut d: Vec<f64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_by(|a, b| a.total_cmp(b));
    d[d.len() / 2]
}

/// Steps along the normal that differ from the median: refused, resampled or kept as they are.
fn check_steps(
    planes: &[Plane],
    order: &[usize],
    keys: &[f64],
    median: f64,
    policy: UnevenSlices,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<Blend>>, String> {
    let tol = step_tolerance(median);
    let odd: Vec<usize> = (0..keys.len() - 1)
        .filter(|&k| (keys[k + 1] - keys[k] - median).abs() > tol)
        .collect();
    let Some(&k) = odd.first() else {
        return Ok(None);
    };
    let first = format!(
        "a step of {:.3} mm between {} and {} (at {:.3} and {:.3} mm along the normal)",
        keys[k + 1] - keys[k],
        planes[order[k]].label,
        planes[order[k + 1]].label,
        keys[k],
        keys[k + 1]
    );
    let more = match odd.len() {
        1 => String::new(),
        m => format!(" and {} more irregular steps", m - 1),
    };
    // How far the last slice is from where a regular grid would put it.
    let misplaced = (0..keys.len())
        .map(|j| (keys[j] - keys[0] - j as f64 * median).abs())
        .fold(0.0, f64::max);
    match policy {
        UnevenSlices::Error => Err(format!(
            "uneven slice positions: {first}{more}, where the median step is {median:.3} mm \
             (a missing slice, or varying spacing); read with uneven slices \"resample\" \
             (interpolate onto a regular {median:.3} mm grid) or \"as-is\" (keep the slices; up \
             to {misplaced:.2} mm off in the affine)"
        )),
        UnevenSlices::AsIs => {
            notes.push(format!(
                "uneven slice positions ({first}{more}; median step {median:.3} mm) kept as they \
                 are: the affine's regular grid is up to {misplaced:.2} mm off for some slices"
            ));
            Ok(None)
        }
        UnevenSlices::Resample => {
            let count = grid_count(keys, median);
            if count > 2.0 * keys.len() as f64 {
                return Err(format!(
                    "uneven slice positions ({first}{more}): a regular {median:.3} mm grid would \
                     need {count} slices for {} images; too sparse to resample",
                    keys.len()
                ));
            }
            let plan = resample_plan(keys, median);
            notes.push(format!(
                "uneven slice positions ({first}{more}): {} slices resampled linearly onto {} \
                 slices at {median:.3} mm",
                keys.len(),
                plan.len()
            ));
            Ok(Some(plan))
        }
    }
}

/// How many slices a regular grid from the first slice at `step` holds, never past the last
/// slice (no extrapolation).
fn grid_count(keys: &[f64], step: f64) -> f64 {
    ((keys[keys.len() - 1] - keys[0]) / step + 1e-6).floor() + 1.0
}

/// For output slices at `keys[0] + j × step`: the neighbours and the weight of the second.
fn resample_plan(keys: &[f64], step: f64) -> Vec<Blend> {
    let last = keys.len() - 1;
    let count = grid_count(keys, step) as usize;
    let mut lo = 0;
    (0..count)
        .map(|j| {
            let t = (keys[0] + j as f64 * step).min(keys[last]);
            while lo + 1 < last && keys[lo + 1] <= t {
                lo += 1;
            }
            let span = keys[lo + 1] - keys[lo];
            let w = ((t - keys[lo]) / span).clamp(0.0, 1.0);
            (lo, lo + 1, w)
        })
        .collect()
}

/// The in-plane shift of slice origins per step (zero unless sheared). A constant shift is a
/// gantry tilt or a sheared stack: kept in the affine. A varying one is refused (kept with a
/// note with [`UnevenSlices::AsIs`]).
fn in_plane_shift(
    planes: &[Plane],
    order: &[usize],
    n: [f64; 3],
    keys: &[f64],
    median: f64,
    policy: UnevenSlices,
    notes: &mut Vec<String>,
) -> Result<[f64; 3], String> {
    let pos = |k: usize| planes[order[k]].position.unwrap_or_default();
    let last = order.len() - 1;
    let per_mm = |d: [f64; 3], along: f64| -> [f64; 3] {
        let inplane = sub(d, n.map(|c| c * along));
        inplane.map(|c| c / along)
    };
    // In-plane drift per mm along the normal, end to end and per step.
    let drift = per_mm(sub(pos(last), pos(0)), keys[last] - keys[0]);
    let tol = step_tolerance(median);
    let worst = (0..last)
        .map(|k| {
            let d = per_mm(sub(pos(k + 1), pos(k)), keys[k + 1] - keys[k]);
            norm(sub(d, drift)) * median
        })
        .fold(0.0, f64::max);
    if worst > tol {
        let msg = format!(
            "slice origins shift in-plane by irregular amounts (up to {worst:.3} mm per slice \
             off a straight line), which no affine can describe"
        );
        if policy != UnevenSlices::AsIs {
            return Err(format!(
                "{msg}; read with uneven slices \"as-is\" to keep them"
            ));
        }
        notes.push(format!("{msg}: kept as they are"));
    }
    let shift = drift.map(|c| c * median);
    if norm(shift) > tol {
        let tilt = norm(shift).atan2(median).to_degrees();
        notes.push(format!(
            "sheared stack (gantry tilt {tilt:.2}°): slice origins move {} mm in-plane per \
             slice; the affine keeps the shear, so the mask overlays the scanned voxels in tools \
             that read the sform",
            fmt3(shift)
        ));
    }
    Ok(shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(k: usize, z: f64) -> Plane {
        Plane {
            label: format!("s{k}"),
            position: Some([0.0, 0.0, z]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            rows: 4,
            cols: 4,
            pixel_spacing: Some((1.0, 1.0)),
            instance: Some(k as i64),
            uid: Some(format!("1.2.{k}")),
        }
    }

    fn stack(zs: &[f64]) -> Vec<Plane> {
        zs.iter().enumerate().map(|(k, &z)| plane(k, z)).collect()
    }

    #[test]
    fn regular_stack_is_sorted_with_the_median_step() {
        let s = arrange(&stack(&[8.0, 0.0, 4.0]), UnevenSlices::Error, |_, _| false).unwrap();
        assert_eq!(s.order, vec![1, 2, 0]);
        assert_eq!(s.spacing, Some(4.0));
        assert_eq!(s.step, Some([0.0, 0.0, 4.0]));
        assert!(s.notes.is_empty() && s.resample.is_none());
    }

    #[test]
    fn a_stack_too_sparse_to_resample_is_refused() {
        let e = arrange(
            &stack(&[0.0, 1.0, 2.0, 1e9]),
            UnevenSlices::Resample,
            |_, _| false,
        )
        .unwrap_err();
        assert!(e.contains("too sparse to resample"), "{e}");
    }

    #[test]
    fn a_gap_is_refused_resampled_or_kept() {
        let zs = [0.0, 4.0, 12.0, 16.0];
        let e = arrange(&stack(&zs), UnevenSlices::Error, |_, _| false).unwrap_err();
        assert!(e.contains("step of 8.000 mm between s1 and s2"), "{e}");
        let r = arrange(&stack(&zs), UnevenSlices::Resample, |_, _| false).unwrap();
        assert_eq!(
            r.resample.unwrap(),
            vec![
                (0, 1, 0.0),
                (1, 2, 0.0),
                (1, 2, 0.5),
                (2, 3, 0.0),
                (2, 3, 1.0)
            ]
        );
        let a = arrange(&stack(&zs), UnevenSlices::AsIs, |_, _| false).unwrap();
        assert!(
            a.resample.is_none() && a.notes[0].contains("4.00 mm off"),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn duplicates_are_kept_once_or_refused() {
        let mut p = stack(&[0.0, 4.0, 4.0, 8.0]);
        let same = arrange(&p, UnevenSlices::Error, |a, b| (a, b) == (1, 2)).unwrap();
        assert_eq!(same.order, vec![0, 1, 3]);
        assert!(
            same.notes[0].contains("s2 duplicates s1"),
            "{:?}",
            same.notes
        );
        let e = arrange(&p, UnevenSlices::Error, |_, _| false).unwrap_err();
        assert!(e.contains("s1 and s2 are both at position"), "{e}");
        p[2].uid = p[1].uid.clone();
        assert_eq!(
            arrange(&p, UnevenSlices::Error, |_, _| false)
                .unwrap()
                .order,
            vec![0, 1, 3]
        );
    }

    #[test]
    fn a_constant_in_plane_drift_is_a_sheared_affine() {
        let mut p = stack(&[0.0, 4.0, 8.0, 12.0]);
        for (k, pl) in p.iter_mut().enumerate() {
            pl.position = Some([0.0, 0.3 * k as f64, 4.0 * k as f64]);
        }
        let s = arrange(&p, UnevenSlices::Error, |_, _| false).unwrap();
        let step = s.step.unwrap();
        assert!((step[1] - 0.3).abs() < 1e-12 && (step[2] - 4.0).abs() < 1e-12);
        assert!(s.notes[0].contains("gantry tilt 4.29°"), "{:?}", s.notes);
        p[2].position = Some([0.0, 2.0, 8.0]);
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .contains("irregular"));
    }

    #[test]
    fn mixed_sizes_orientations_and_missing_positions_are_refused() {
        let mut p = stack(&[0.0, 4.0, 8.0]);
        p[1].rows = 8;
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .starts_with("s1 has 8×4 pixels"));
        let mut p = stack(&[0.0, 4.0, 8.0]);
        p[2].orientation = Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]);
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .contains("ImageOrientationPatient"));
        let mut p = stack(&[0.0, 4.0, 8.0]);
        p[1].pixel_spacing = Some((1.0, 1.2));
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .contains("pixel spacing"));
        let mut p = stack(&[0.0, 4.0, 8.0]);
        p[1].position = Some([0.0, f64::NAN, 4.0]);
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .contains("s1 has ImagePositionPatient"));
        let mut p = stack(&[0.0, 4.0, 8.0]);
        for q in &mut p {
            q.orientation = Some([0.0; 6]);
        }
        assert!(arrange(&p, UnevenSlices::Error, |_, _| false)
            .unwrap_err()
            .contains("not two orthogonal unit vectors"));
        let mut p = stack(&[0.0, 4.0, 8.0]);
        p[0].position = None;
        let e = arrange(&p, UnevenSlices::Error, |_, _| false).unwrap_err();
        assert!(e.contains("missing in 1 of 3 images (s0)"), "{e}");
        for q in &mut p {
            q.position = None;
        }
        p[0].instance = Some(9);
        let s = arrange(&p, UnevenSlices::Error, |_, _| false).unwrap();
        assert_eq!((s.order, s.step), (vec![1, 2, 0], None));
    }
}
