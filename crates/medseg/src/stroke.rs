//! The stroke readout on an ADC map (no Burn, no I/O): inside a segmented lesion, the mean
//! apparent diffusion coefficient and the ischaemic-core volume below a threshold.
//!
//! The default threshold, ADC < 620 × 10⁻⁶ mm²/s, is the one stroke trials' core-volume
//! software used (DEFUSE 3 / DAWN era). ADC maps are stored in different units: most scanners
//! write integers in 10⁻⁶ mm²/s (µm²/s), some floats in 10⁻³ mm²/s, some mm²/s. The unit is an
//! option ([`AdcOptions::scale`]); values that look wrong for it (a median inside the lesion
//! outside 50–10 000 × 10⁻⁶ mm²/s) earn a note naming the likely unit, never a silent guess.

use crate::error::{Error, Result};
use crate::volume::Volume;

/// The default core threshold, in 10⁻⁶ mm²/s.
pub const DEFAULT_CORE_THRESHOLD: f64 = 620.0;

/// How the ADC map is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdcOptions {
    /// Core threshold in 10⁻⁶ mm²/s (voxels strictly below it are core).
    pub threshold: f64,
    /// What one stored unit is, in mm²/s: `1e-6` (default), `1e-3` or `1`.
    pub scale: f64,
}

impl Default for AdcOptions {
    fn default() -> Self {
        AdcOptions {
            threshold: DEFAULT_CORE_THRESHOLD,
            scale: 1e-6,
        }
    }
}

impl AdcOptions {
    /// Options from text: a threshold in 10⁻⁶ mm²/s and the map's unit (`1e-6`, `1e-3`, `1`,
    /// also `um2/s`, `10^-3 mm2/s`-style spellings `e-6`, `e-3`, `mm2/s`).
    pub fn parse(threshold: f64, units: &str) -> Result<Self> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(Error::InvalidOption(format!(
                "ADC threshold {threshold}: give a positive number in 10^-6 mm²/s (default 620)"
            )));
        }
        let scale = match units.trim().to_ascii_lowercase().as_str() {
            "1e-6" | "e-6" | "um2/s" | "µm2/s" | "10^-6" => 1e-6,
            "1e-3" | "e-3" | "10^-3" => 1e-3,
            "1" | "mm2/s" => 1.0,
            _ => {
                return Err(Error::InvalidOption(format!(
                    "ADC units {units:?}: the size of one stored unit in mm²/s: 1e-6 (most \
                     scanners: integers in 10^-6 mm²/s), 1e-3 or 1"
                )))
            }
        };
        Ok(AdcOptions { threshold, scale })
    }
}

/// What the ADC map says inside a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct AdcReadout {
    /// Mean ADC inside the mask, in 10⁻⁶ mm²/s (`None` for an empty mask).
    pub mean: Option<f64>,
    /// Mask voxels with ADC below the threshold.
    pub core_voxels: usize,
    /// Their volume in mL (`None` when the volume gives no voxel size).
    pub core_ml: Option<f64>,
    /// The threshold used, in 10⁻⁶ mm²/s.
    pub threshold: f64,
    /// Why the values may be in another unit than the one given.
    pub note: Option<String>,
}

impl std::fmt::Display for AdcReadout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mean {
            Some(m) => write!(f, "mean ADC {m:.0} x10^-6 mm²/s; ")?,
            None => write!(f, "mean ADC - (empty mask); ")?,
        }
        write!(f, "core (ADC < {:.0}) ", self.threshold)?;
        match self.core_ml {
            Some(ml) => write!(f, "{ml:.3} mL ({} voxels)", self.core_voxels),
            None => write!(f, "{} voxels", self.core_voxels),
        }
    }
}

/// Refuse an ADC map that is not on `vol`'s grid: the same dimensions, and every corner voxel
/// within a tenth of the smallest voxel side of its place in `vol`.
pub fn check_same_grid(adc: &Volume, vol: &Volume) -> Result<()> {
    if adc.dims != vol.dims {
        return Err(Error::InvalidImage(format!(
            "the ADC map is {:?} (slices, rows, columns), the segmented volume {:?}: give the \
             ADC map of the same acquisition, on the same grid",
            adc.dims, vol.dims
        )));
    }
    let tol = 0.1 * vol.spacing.iter().copied().fold(f64::INFINITY, f64::min);
    let [nz, ny, nx] = vol.dims.map(|d| (d - 1) as f64);
    let mut worst = 0.0f64;
    for corner in 0..8 {
        let ijk = [
            if corner & 1 == 1 { nx } else { 0.0 },
            if corner & 2 == 2 { ny } else { 0.0 },
            if corner & 4 == 4 { nz } else { 0.0 },
        ];
        let (a, b) = (world(&adc.affine, ijk), world(&vol.affine, ijk));
        let d = (0..3).map(|r| (a[r] - b[r]).powi(2)).sum::<f64>().sqrt();
        worst = worst.max(d);
    }
    if worst.is_nan() || worst > tol {
        return Err(Error::InvalidImage(format!(
            "the ADC map's grid is {worst:.3} mm away from the segmented volume's (at most \
             {tol:.3} mm allowed): give the ADC map of the same acquisition, or resample it"
        )));
    }
    Ok(())
}

fn world(a: &[[f64; 4]; 4], ijk: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3])
}

/// The readout of `adc` inside `mask` (on `vol`'s grid, checked by [`check_same_grid`]).
pub fn adc_readout(
    mask: &[bool],
    vol: &Volume,
    adc: &Volume,
    opts: &AdcOptions,
) -> Result<AdcReadout> {
    check_same_grid(adc, vol)?;
    if mask.len() != adc.data.len() {
        return Err(Error::InvalidImage(format!(
            "a mask of {} values for an ADC map of {}",
            mask.len(),
            adc.data.len()
        )));
    }
    let to_micro = opts.scale / 1e-6;
    let mut inside: Vec<f64> = mask
        .iter()
        .zip(&adc.data)
        .filter(|(&m, _)| m)
        .map(|(_, &v)| f64::from(v) * to_micro)
        .collect();
    let core_voxels = inside.iter().filter(|&&v| v < opts.threshold).count();
    let mean = (!inside.is_empty()).then(|| inside.iter().sum::<f64>() / inside.len() as f64);
    let note = unit_note(&mut inside, opts.scale);
    Ok(AdcReadout {
        mean,
        core_voxels,
        core_ml: vol
            .spacing_known
            .then(|| core_voxels as f64 * vol.voxel_ml()),
        threshold: opts.threshold,
        note,
    })
}

/// A note when the median inside the lesion is implausible for tissue in the unit given.
fn unit_note(values: &mut [f64], scale: f64) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let median = *values.select_nth_unstable_by(mid, f64::total_cmp).1;
    if (50.0..=10_000.0).contains(&median) {
        return None;
    }
    // The unit that would put the median at a tissue value (~800 × 10⁻⁶ mm²/s).
    let stored = median * 1e-6 / scale;
    let off = |u: f64| ((stored * u / 1e-6).abs().max(f64::MIN_POSITIVE).ln() - 800f64.ln()).abs();
    let likely = [1e-9, 1e-6, 1e-3, 1.0]
        .into_iter()
        .min_by(|&a, &b| off(a).total_cmp(&off(b)))
        .unwrap_or(1e-6);
    Some(format!(
        "the median ADC inside the lesion is {median:.3} x10^-6 mm²/s with one stored unit = \
         {scale:e} mm²/s, not a tissue value: the map is probably stored in {likely:e} mm²/s \
         (say so with the ADC units option)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Modality;

    fn vol(data: Vec<f32>) -> Volume {
        Volume::new(data, [2, 2, 2], [2.0, 1.0, 1.0], Modality::Mr).unwrap()
    }

    #[test]
    fn core_is_the_masked_voxels_below_the_threshold() {
        let v = vol(vec![0.0; 8]);
        let adc = vol(vec![500.0, 700.0, 619.0, 620.0, 100.0, 100.0, 900.0, 300.0]);
        let mask = [true, true, true, true, false, false, true, false];
        let r = adc_readout(&mask, &v, &adc, &AdcOptions::default()).unwrap();
        assert_eq!(r.core_voxels, 2, "500 and 619; 620 is not below");
        assert!((r.mean.unwrap() - (500.0 + 700.0 + 619.0 + 620.0 + 900.0) / 5.0).abs() < 1e-9);
        assert!((r.core_ml.unwrap() - 2.0 * 0.002).abs() < 1e-12);
        assert!(r.note.is_none());
        // The same map stored in 10⁻³ mm²/s.
        let milli = vol(adc.data.iter().map(|v| v / 1000.0).collect());
        let wrong = adc_readout(&mask, &v, &milli, &AdcOptions::default()).unwrap();
        let note = wrong.note.unwrap();
        assert!(note.contains("1e-3 mm²/s"), "{note}");
        let right = AdcOptions::parse(620.0, "1e-3").unwrap();
        let r2 = adc_readout(&mask, &v, &milli, &right).unwrap();
        assert_eq!(r2.core_voxels, 2);
        assert!((r2.mean.unwrap() - r.mean.unwrap()).abs() < 1e-3 && r2.note.is_none());
    }

    #[test]
    fn another_grid_is_refused() {
        let v = vol(vec![0.0; 8]);
        let mut moved = vol(vec![0.0; 8]);
        moved.affine[0][3] = 0.5;
        let e = check_same_grid(&moved, &v).unwrap_err().to_string();
        assert!(e.contains("0.500 mm away"), "{e}");
        moved.affine[0][3] = 0.05;
        check_same_grid(&moved, &v).unwrap();
        let other = Volume::new(vec![0.0; 4], [1, 2, 2], [1.0; 3], Modality::Mr).unwrap();
        let e = check_same_grid(&other, &v).unwrap_err().to_string();
        assert!(e.contains("[1, 2, 2]"), "{e}");
        for (t, u) in [(0.0, "1e-6"), (f64::NAN, "1e-6"), (620.0, "ms")] {
            assert!(AdcOptions::parse(t, u).is_err(), "{t} {u}");
        }
    }
}
