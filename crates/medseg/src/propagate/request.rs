//! What a front-end (the CLI, Python, a cohort case) asks of a volume before it is read, turned
//! into [`VolumeOptions`] in one place once the volume's size is known: the default key slice,
//! the box fitted by the front-end's [`BoxPolicy`], the drift rule, the empty-slice rule.

use super::options::{drift_limit, EmptySlice, VolumeOptions};
use crate::error::Result;
use crate::prompt::{fit_box, BoxPolicy};
use crate::volume::{Intensity, Volume};

/// A 3D request: one box on a key slice and how to propagate it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRequest {
    /// `None`: the middle slice.
    pub key_slice: Option<usize>,
    /// Box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub bbox: [f64; 4],
    /// `None`: by modality.
    pub window: Option<Intensity>,
    /// Keep only the largest 3D component (the chain rule's option).
    pub largest_component: bool,
    /// After an empty slice, the key box again (the official LiteMedSAM 3D rule).
    pub official_fallback: bool,
    /// Grey levels of drift that stop the chain rule (0 disables; default 40).
    pub max_drift: f64,
    /// Keep each pass's logits.
    pub keep_pass_logits: bool,
    /// What a box past the slice's edge gets (default: clipped, with a warning).
    pub box_policy: BoxPolicy,
}

impl VolumeRequest {
    /// The defaults for a box on `key_slice` (`None`: the middle slice).
    pub fn new(key_slice: Option<usize>, bbox: [f64; 4]) -> Self {
        Self {
            key_slice,
            bbox,
            window: None,
            largest_component: false,
            official_fallback: false,
            max_drift: 40.0,
            keep_pass_logits: false,
            box_policy: BoxPolicy::Clip,
        }
    }

    /// The options for `vol`, and the warning to show when the box was clipped. A bad drift or
    /// box is an error; the key slice is checked by the propagation.
    pub fn options(&self, vol: &Volume) -> Result<(VolumeOptions, Option<String>)> {
        let [nz, ny, nx] = vol.dims;
        let (bbox, note) = fit_box(self.bbox, (ny, nx), self.box_policy)?;
        let mut opts = VolumeOptions::new(self.key_slice.unwrap_or(nz / 2), bbox);
        opts.intensity = self.window;
        opts.largest_component = self.largest_component;
        opts.max_intensity_drift = drift_limit(self.max_drift)?;
        opts.keep_pass_logits = self.keep_pass_logits;
        if self.official_fallback {
            opts.on_empty = EmptySlice::KeyBoxFallback;
        }
        Ok((opts, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Modality;

    #[test]
    fn options_take_the_middle_slice_fit_the_box_and_check_the_drift() {
        let vol = Volume::new(vec![0.0; 5 * 8 * 10], [5, 8, 10], [1.0; 3], Modality::Mr).unwrap();
        let mut r = VolumeRequest::new(None, [-2.0, 1.0, 6.0, 7.0]);
        let (o, note) = r.options(&vol).unwrap();
        assert_eq!((o.key_slice, o.bbox), (2, [0.0, 1.0, 6.0, 7.0]));
        assert!(note.unwrap().contains("clipped"));
        assert_eq!(o.max_intensity_drift, Some(40.0));
        r.box_policy = BoxPolicy::Refuse;
        assert!(r.options(&vol).is_err());
        r.bbox = [0.0, 1.0, 6.0, 7.0];
        r.max_drift = 0.0;
        r.official_fallback = true;
        let (o, note) = r.options(&vol).unwrap();
        assert_eq!(
            (o.max_intensity_drift, o.on_empty, note),
            (None, EmptySlice::KeyBoxFallback, None)
        );
        r.max_drift = f64::NAN;
        assert!(r
            .options(&vol)
            .unwrap_err()
            .to_string()
            .contains("max drift"));
    }
}
