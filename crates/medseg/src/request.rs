//! What a front-end asks medseg to do, as text fields: one parser for the CLI's flags, Python's
//! keyword arguments, a cohort's CSV columns and the viewer's JSON, so that each takes the same
//! values, refuses the same mistakes in the same words (naming the field, which each front-end
//! spells its own way: `--max-drift`, `max_drift=`, a `max_drift` column), and fills the same
//! [`VolumeRequest`]. No Burn, no I/O.
//!
//! ```
//! use medseg::SegmentRequest;
//! let r = SegmentRequest::parse(&[("model", "medsam2"), ("box", "10,20,60,80"), ("max_drift", "0")])
//!     .unwrap();
//! assert_eq!(r.model, Some(medseg::ModelFamily::MedSam2));
//! assert_eq!(r.volume().unwrap().max_drift, 0.0);
//! let e = SegmentRequest::parse(&[("key_slice", "-1")]).unwrap_err();
//! assert_eq!(e.to_string(), "key_slice \"-1\": give a slice number (0, 1, ...)");
//! ```

use std::path::PathBuf;

use crate::error::{field, given, reason, Error, Result};
use crate::family::ModelFamily;
use crate::precision::Precision;
use crate::prompt::{parse_box, BoxPolicy};
use crate::propagate::{RequestOptions, VolumeRequest};
use crate::volume::Intensity;

/// A segmentation request. `None` is "not given": the front-end's default applies (the batch's
/// model, the middle slice, the window by modality, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentRequest {
    /// `input`: an image, NIfTI file, DICOM file or series folder.
    pub input: Option<PathBuf>,
    /// `model`: a family name or alias ([`ModelFamily::parse`]).
    pub model: Option<ModelFamily>,
    /// `weights`: a checkpoint.
    pub weights: Option<PathBuf>,
    /// `precision`: `f32` or `bf16`.
    pub precision: Option<Precision>,
    /// `key_slice`: the slice the box is drawn on.
    pub key_slice: Option<usize>,
    /// `box`: `X0,Y0,X1,Y1` in pixels of the key slice.
    pub bbox: Option<[f64; 4]>,
    /// `window`: a named window, `mr`, `minmax` or `LEVEL,WIDTH` ([`Intensity::parse`]).
    pub window: Option<Intensity>,
    /// `box_policy`: `clip` (a box past the edge is clipped, with a warning) or `refuse`.
    pub box_policy: Option<BoxPolicy>,
    /// `modality`, `max_drift`, `official_fallback`, `largest_component`, `stop_after_empty`.
    pub options: RequestOptions,
}

impl SegmentRequest {
    /// The request's own field names; with [`RequestOptions::FIELDS`] the keys of every
    /// front-end ([`SegmentRequest::names`]).
    pub const FIELDS: [&'static str; 8] = [
        "input",
        "model",
        "weights",
        "precision",
        "key_slice",
        "box",
        "window",
        "box_policy",
    ];

    /// Every field name, as every front-end's keys (the CLI's flags are these with `-` for
    /// `_`, `--slice` for `key_slice`).
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::FIELDS.into_iter().chain(RequestOptions::FIELDS)
    }

    /// The request from text fields; a missing or empty field is not given, fields of other
    /// names are left to the caller. The first bad field is an [`Error::InvalidField`].
    pub fn parse(fields: &[(&str, &str)]) -> Result<Self> {
        let get = |k: &str| given(fields, k);
        let path = |k: &str| get(k).map(PathBuf::from);
        Ok(Self {
            input: path("input"),
            model: field(get("model"), "model", |v| {
                ModelFamily::parse(v).ok_or_else(|| format!("use one of {}", ModelFamily::names()))
            })?,
            weights: path("weights"),
            precision: field(get("precision"), "precision", |v| {
                Precision::parse(v).ok_or_else(|| "use f32 or bf16".to_string())
            })?,
            key_slice: field(get("key_slice"), "key_slice", |v| {
                v.parse()
                    .map_err(|_| "give a slice number (0, 1, ...)".into())
            })?,
            bbox: field(get("box"), "box", |v| parse_box(v).map_err(reason))?,
            window: field(get("window"), "window", |v| {
                Intensity::parse(v).map_err(reason)
            })?,
            box_policy: field(get("box_policy"), "box_policy", parse_box_policy)?,
            options: RequestOptions::parse(fields)?,
        })
    }

    /// The request as text fields that [`SegmentRequest::parse`] reads back (paths as text:
    /// lossy for names that are not UTF-8); fields not given are empty.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let text = |v: Option<String>| v.unwrap_or_default();
        let path = |p: &Option<PathBuf>| text(p.as_ref().map(|p| p.display().to_string()));
        let policy = self.box_policy.map(|p| match p {
            BoxPolicy::Clip => "clip".to_string(),
            BoxPolicy::Refuse => "refuse".to_string(),
        });
        let own = [
            ("input", path(&self.input)),
            ("model", text(self.model.map(|m| m.name().into()))),
            ("weights", path(&self.weights)),
            ("precision", text(self.precision.map(|p| p.name().into()))),
            ("key_slice", text(self.key_slice.map(|k| k.to_string()))),
            (
                "box",
                text(self.bbox.map(|b| b.map(|v| v.to_string()).join(","))),
            ),
            ("window", text(self.window.map(Intensity::as_text))),
            ("box_policy", text(policy)),
        ];
        own.into_iter().chain(self.options.fields()).collect()
    }

    /// The 3D request: the box (required), key slice, window, box policy (default: clip) and
    /// propagation options.
    pub fn volume(&self) -> Result<VolumeRequest> {
        let bbox = self.bbox.ok_or_else(|| Error::InvalidField {
            field: "box",
            reason: "missing: give X0,Y0,X1,Y1".into(),
        })?;
        let mut r = VolumeRequest::new(self.key_slice, bbox);
        r.window = self.window;
        r.box_policy = self.box_policy.unwrap_or_default();
        self.options.apply(&mut r);
        Ok(r)
    }
}

fn parse_box_policy(v: &str) -> std::result::Result<BoxPolicy, String> {
    match v.to_ascii_lowercase().as_str() {
        "clip" => Ok(BoxPolicy::Clip),
        "refuse" => Ok(BoxPolicy::Refuse),
        _ => Err("use clip or refuse".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Modality;

    #[test]
    fn every_field_parses_and_round_trips() {
        let given = [
            ("input", "scans/a.nii.gz"),
            ("model", "MedSAM2"),
            ("weights", "w.pt"),
            ("precision", "bf16"),
            ("key_slice", "12"),
            ("box", " 1.5, 2,30,40"),
            ("window", "stroke"),
            ("box_policy", "refuse"),
            ("modality", "ct"),
            ("max_drift", "20"),
            ("official_fallback", "yes"),
            ("largest_component", "no"),
            ("stop_after_empty", "3"),
            ("case_id", "other fields are the caller's"),
        ];
        let r = SegmentRequest::parse(&given).unwrap();
        assert_eq!(r.input, Some(PathBuf::from("scans/a.nii.gz")));
        assert_eq!(
            (r.model, r.precision, r.key_slice),
            (Some(ModelFamily::MedSam2), Some(Precision::Bf16), Some(12))
        );
        assert_eq!(r.bbox, Some([1.5, 2.0, 30.0, 40.0]));
        assert_eq!(
            r.window,
            Some(Intensity::Window {
                level: 40.0,
                width: 40.0
            })
        );
        assert_eq!(r.box_policy, Some(BoxPolicy::Refuse));
        assert_eq!(r.options.modality, Some(Modality::Ct));
        let names: Vec<&str> = r.fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(names, SegmentRequest::names().collect::<Vec<_>>());
        let back = r.fields();
        let back: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(SegmentRequest::parse(&back).unwrap(), r);
        let none = SegmentRequest::parse(&[("model", " "), ("window", "")]).unwrap();
        assert_eq!(none, SegmentRequest::default());
    }

    #[test]
    fn bad_fields_are_named_with_their_value() {
        for (k, v, want) in [
            ("model", "sam3", "model \"sam3\": use one of lite-medsam"),
            ("precision", "fp8", "precision \"fp8\": use f32 or bf16"),
            ("key_slice", "2.5", "key_slice \"2.5\": give a slice number"),
            ("box", "1,2,3", "box \"1,2,3\": expected four numbers"),
            ("window", "40", "window \"40\": use brain"),
            (
                "box_policy",
                "grow",
                "box_policy \"grow\": use clip or refuse",
            ),
            ("modality", "pet", "modality \"pet\": give ct or mr"),
            ("max_drift", "-1", "max_drift \"-1\":"),
            (
                "largest_component",
                "2",
                "largest_component \"2\": give yes or no",
            ),
        ] {
            let e = SegmentRequest::parse(&[(k, v)]).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidField { field, .. } if *field == k),
                "{k}: {e:?}"
            );
            assert!(e.to_string().starts_with(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn the_volume_request_takes_every_option() {
        let r = SegmentRequest::parse(&[
            ("key_slice", "3"),
            ("box", "1,2,6,7"),
            ("window", "minmax"),
            ("box_policy", "refuse"),
            ("max_drift", "0"),
            ("official_fallback", "yes"),
            ("largest_component", "yes"),
            ("modality", "mr"),
            ("stop_after_empty", "2"),
        ])
        .unwrap();
        let v = r.volume().unwrap();
        assert_eq!(v.stop_after_empty, Some(2));
        assert_eq!((v.key_slice, v.bbox), (Some(3), [1.0, 2.0, 6.0, 7.0]));
        assert_eq!(
            (v.window, v.box_policy, v.modality),
            (
                Some(Intensity::MinMax),
                BoxPolicy::Refuse,
                Some(Modality::Mr)
            )
        );
        assert_eq!(v.max_drift, 0.0);
        assert!(v.official_fallback && v.largest_component);
        let d = SegmentRequest::parse(&[("box", "1,2,6,7")])
            .unwrap()
            .volume();
        assert_eq!(d.unwrap(), VolumeRequest::new(None, [1.0, 2.0, 6.0, 7.0]));
        let e = SegmentRequest::default().volume().unwrap_err();
        assert_eq!(e.to_string(), "box missing: give X0,Y0,X1,Y1");
    }
}
