//! What a front-end (the CLI, Python, a cohort case) asks of a volume before it is read, turned
//! into [`VolumeOptions`] in one place once the volume's size is known: the default key slice,
//! the box fitted by the front-end's [`BoxPolicy`], the drift rule, the empty-slice rule.

use super::options::{drift_limit, EmptySlice, VolumeOptions};
use crate::error::{field, given, reason, Result};
use crate::prompt::{fit_box, BoxPolicy};
use crate::volume::{Intensity, Modality, Volume};

/// A 3D request: one box on a key slice and how to propagate it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRequest {
    /// `None`: the middle slice.
    pub key_slice: Option<usize>,
    /// Box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub bbox: [f64; 4],
    /// `None`: by modality.
    pub window: Option<Intensity>,
    /// What the intensities are when the file does not say (or says wrong): sets the default
    /// window (`None`: the reader's modality).
    pub modality: Option<Modality>,
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
    /// End a direction after this many empty slices in a row (`None`: every slice).
    pub stop_after_empty: Option<usize>,
}

impl VolumeRequest {
    /// The defaults for a box on `key_slice` (`None`: the middle slice).
    pub fn new(key_slice: Option<usize>, bbox: [f64; 4]) -> Self {
        Self {
            key_slice,
            bbox,
            window: None,
            modality: None,
            largest_component: false,
            official_fallback: false,
            max_drift: 40.0,
            keep_pass_logits: false,
            box_policy: BoxPolicy::Clip,
            stop_after_empty: None,
        }
    }

    /// The options for `vol`, and the warning to show when the box was clipped. A bad drift or
    /// box is an error; the key slice is checked by the propagation.
    pub fn options(&self, vol: &Volume) -> Result<(VolumeOptions, Option<String>)> {
        let [nz, ny, nx] = vol.dims;
        let (bbox, note) = fit_box(self.bbox, (ny, nx), self.box_policy)?;
        let mut opts = VolumeOptions::new(self.key_slice.unwrap_or(nz / 2), bbox);
        opts.intensity = self.window.or(self.modality.map(Intensity::default_for));
        opts.largest_component = self.largest_component;
        opts.max_intensity_drift = drift_limit(self.max_drift)?;
        opts.keep_pass_logits = self.keep_pass_logits;
        opts.stop_after_empty = self.stop_after_empty;
        if self.official_fallback {
            opts.on_empty = EmptySlice::KeyBoxFallback;
        }
        Ok((opts, note))
    }
}

/// A 3D request's options beyond the box and window, as text fields give them (a cohort's
/// optional CSV columns, a Python dict, a JSON request): one parser for every front-end that
/// takes text. An empty or missing field is the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// `modality`: `ct` or `mr` (sets the default window).
    pub modality: Option<Modality>,
    /// `max_drift`: grey levels (0 disables; default 40).
    pub max_drift: Option<f64>,
    /// `official_fallback`: yes/no (the key box after an empty slice).
    pub official_fallback: bool,
    /// `largest_component`: yes/no.
    pub largest_component: bool,
    /// `stop_after_empty`: end a direction after this many empty slices in a row (0 or
    /// empty: never).
    pub stop_after_empty: Option<usize>,
}

impl RequestOptions {
    /// The field names.
    pub const FIELDS: [&'static str; 5] = [
        "modality",
        "max_drift",
        "official_fallback",
        "largest_component",
        "stop_after_empty",
    ];

    /// The options from text fields (others are ignored); a bad one is an
    /// [`Error::InvalidField`].
    pub fn parse(fields: &[(&str, &str)]) -> Result<Self> {
        let get = |k: &str| given(fields, k);
        let flag = |k: &'static str| {
            let yes_no = |v: &str| match v.to_ascii_lowercase().as_str() {
                "0" | "false" | "no" => Ok(false),
                "1" | "true" | "yes" => Ok(true),
                _ => Err("give yes or no".to_string()),
            };
            field(get(k), k, yes_no).map(|v| v.unwrap_or(false))
        };
        let modality = field(get("modality"), "modality", |v| {
            Modality::parse(v).ok_or_else(|| "give ct or mr".to_string())
        })?;
        let max_drift = field(get("max_drift"), "max_drift", |v| {
            let d = v.parse().map_err(|_| "give a number".to_string())?;
            drift_limit(d).map(|_| d).map_err(reason)
        })?;
        let stop_after_empty = field(get("stop_after_empty"), "stop_after_empty", |v| {
            v.parse::<usize>()
                .map_err(|_| "give a number of slices (0: never stop early)".to_string())
        })?;
        Ok(Self {
            modality,
            max_drift,
            official_fallback: flag("official_fallback")?,
            largest_component: flag("largest_component")?,
            stop_after_empty: stop_after_empty.filter(|&n| n > 0),
        })
    }

    /// The options as text fields, as [`RequestOptions::parse`] reads them back.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let yes = |b: bool| if b { "yes" } else { "" }.to_string();
        let modality = self.modality.map(|m| m.to_string().to_ascii_lowercase());
        vec![
            ("modality", modality.unwrap_or_default()),
            (
                "max_drift",
                self.max_drift.map(|d| d.to_string()).unwrap_or_default(),
            ),
            ("official_fallback", yes(self.official_fallback)),
            ("largest_component", yes(self.largest_component)),
            (
                "stop_after_empty",
                (self.stop_after_empty.map(|n| n.to_string())).unwrap_or_default(),
            ),
        ]
    }

    /// The options given, as one line (`""` for the defaults): `modality=ct max_drift=20`.
    pub fn summary(&self) -> String {
        let fields = self.fields();
        let given = fields.iter().filter(|(_, v)| !v.is_empty());
        given
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Put the options into `r`.
    pub fn apply(&self, r: &mut VolumeRequest) {
        r.modality = self.modality.or(r.modality);
        if let Some(d) = self.max_drift {
            r.max_drift = d;
        }
        r.official_fallback |= self.official_fallback;
        r.largest_component |= self.largest_component;
        r.stop_after_empty = self.stop_after_empty.or(r.stop_after_empty);
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

    #[test]
    fn text_options_parse_round_trip_and_name_bad_fields() {
        let o = RequestOptions::parse(&[
            ("modality", "CT"),
            ("max_drift", "20"),
            ("official_fallback", "yes"),
            ("largest_component", ""),
            ("stop_after_empty", "2"),
            ("case_id", "ignored"),
        ])
        .unwrap();
        assert_eq!(o.stop_after_empty, Some(2));
        assert_eq!(o.modality, Some(Modality::Ct));
        assert_eq!(
            (o.max_drift, o.official_fallback, o.largest_component),
            (Some(20.0), true, false)
        );
        assert_eq!(
            o.summary(),
            "modality=ct max_drift=20 official_fallback=yes stop_after_empty=2"
        );
        let never = RequestOptions::parse(&[("stop_after_empty", "0")]).unwrap();
        assert_eq!(never.stop_after_empty, None);
        let f = o.fields();
        let back: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(RequestOptions::parse(&back).unwrap(), o);
        assert_eq!(RequestOptions::parse(&[]).unwrap().summary(), "");
        for (k, v, needle) in [
            ("modality", "pet", "ct or mr"),
            ("max_drift", "x", "a number"),
            ("max_drift", "-3", "grey levels"),
            ("official_fallback", "maybe", "yes or no"),
            ("stop_after_empty", "-1", "a number of slices"),
        ] {
            let e = RequestOptions::parse(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
        // modality sets the default window; a window given wins.
        let vol = Volume::new(vec![0.0; 5 * 8 * 10], [5, 8, 10], [1.0; 3], Modality::Mr).unwrap();
        let mut r = VolumeRequest::new(None, [0.0, 1.0, 6.0, 7.0]);
        o.apply(&mut r);
        let (opts, _) = r.options(&vol).unwrap();
        assert_eq!(opts.intensity, Some(Intensity::default_for(Modality::Ct)));
        assert_eq!(
            (opts.max_intensity_drift, opts.on_empty),
            (Some(20.0), EmptySlice::KeyBoxFallback)
        );
        assert_eq!(opts.stop_after_empty, Some(2));
        r.window = Some(Intensity::MinMax);
        assert_eq!(
            r.options(&vol).unwrap().0.intensity,
            Some(Intensity::MinMax)
        );
    }
}
