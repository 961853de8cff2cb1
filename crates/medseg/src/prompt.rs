//! Prompts in original-image pixel coordinates: parsing and validation (no Burn).
//!
//! Everything a user types or passes in as a prompt is checked here before it reaches the
//! model, so a bad box or point is an [`Error`], never a panic or a silent clamp.

use crate::error::{Error, Result};

/// A prompt in original-image pixel coordinates.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// Boxes `[x0, y0, x1, y1]`; several boxes run as one batched decoder call.
    pub boxes: Vec<[f64; 4]>,
    /// Points `(x, y)` with labels (1 foreground, 0 background), shared by every box.
    pub points: Vec<([f64; 2], i64)>,
    /// Optional low-res mask logits `256 × 256` from an earlier prediction.
    pub mask_input: Option<Vec<f32>>,
    /// Return the three multimask outputs instead of the single mask.
    pub multimask: bool,
}

impl Prompt {
    /// One box, single-mask output (the MedSAM use).
    pub fn from_box(b: [f64; 4]) -> Self {
        Self {
            boxes: vec![b],
            ..Default::default()
        }
    }

    /// Check every part of the prompt against an image of `size = (height, width)`, for the
    /// SAM families (a mask input is 256 × 256).
    pub fn validate(&self, size: (usize, usize)) -> Result<()> {
        self.validate_for(size, crate::frame::LOW_RES)
    }

    /// [`Prompt::validate`] for a model whose mask input is `low_res × low_res`
    /// ([`crate::ModelFamily::low_res_side`]).
    pub fn validate_for(&self, size: (usize, usize), low_res: usize) -> Result<()> {
        for b in &self.boxes {
            validate_box(*b, size)?;
        }
        for (p, l) in &self.points {
            if p.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidPrompt(
                    "point coordinates must be finite".into(),
                ));
            }
            if !(*l == 0 || *l == 1) {
                return Err(Error::InvalidPrompt(format!(
                    "point label {l}: expected 1 (foreground) or 0 (background)"
                )));
            }
        }
        if let Some(m) = &self.mask_input {
            if m.len() != low_res * low_res {
                return Err(Error::InvalidPrompt(format!(
                    "mask input has {} values, expected {low_res}x{low_res}",
                    m.len()
                )));
            }
            if m.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidPrompt(
                    "mask input holds non-finite values".into(),
                ));
            }
        }
        if self.boxes.is_empty() && self.points.is_empty() && self.mask_input.is_none() {
            return Err(Error::InvalidPrompt("no box, point or mask given".into()));
        }
        Ok(())
    }
}

/// Check a click `[x, y]` against an image of `size = (height, width)`: finite and inside
/// (edges included), its label 1 (foreground) or 0 (background).
pub fn validate_point(p: [f64; 2], label: i64, size: (usize, usize)) -> Result<()> {
    let (h, w) = size;
    if !p.iter().all(|v| v.is_finite())
        || p[0] < 0.0
        || p[1] < 0.0
        || p[0] > w as f64
        || p[1] > h as f64
    {
        return Err(Error::InvalidPrompt(format!(
            "point ({}, {}) outside the {w}x{h} slice",
            p[0], p[1]
        )));
    }
    if label != 0 && label != 1 {
        return Err(Error::InvalidPrompt(format!(
            "point label {label}: expected 1 (foreground) or 0 (background)"
        )));
    }
    Ok(())
}

/// Check a box `[x0, y0, x1, y1]` against an image of `size = (height, width)`: finite,
/// inside the image, and not degenerate.
pub fn validate_box(b: [f64; 4], size: (usize, usize)) -> Result<()> {
    let (h, w) = size;
    let err = |reason: &str| Error::InvalidBox {
        bbox: b,
        width: w,
        height: h,
        reason: reason.into(),
    };
    if b.iter().any(|v| !v.is_finite()) {
        return Err(err("coordinates must be finite"));
    }
    if b[0] < 0.0 || b[1] < 0.0 || b[2] > w as f64 || b[3] > h as f64 {
        return Err(err("the box lies (partly) outside the image"));
    }
    if b[2] <= b[0] || b[3] <= b[1] {
        return Err(err("need x0 < x1 and y0 < y1"));
    }
    Ok(())
}

/// What a front-end does with a box that runs past the image edge (as drawing tools give for a
/// lesion at the border). The CLI and Python both clip, with a warning; a box wholly outside
/// the image, reversed or not finite is an error under either policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoxPolicy {
    /// Refuse it ([`validate_box`]).
    Refuse,
    /// Clip it to the image, and say so.
    #[default]
    Clip,
}

/// `b` for an image of `size = (height, width)` under `policy`: the box to use, and the
/// warning to show when it was clipped. Errors as [`validate_box`].
pub fn fit_box(
    b: [f64; 4],
    size: (usize, usize),
    policy: BoxPolicy,
) -> Result<([f64; 4], Option<String>)> {
    let (h, w) = (size.0 as f64, size.1 as f64);
    let ordered = b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3];
    if policy == BoxPolicy::Refuse || !ordered {
        return validate_box(b, size).map(|()| (b, None));
    }
    let c = [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ];
    if c[0] >= c[2] || c[1] >= c[3] {
        return Err(Error::InvalidBox {
            bbox: b,
            width: size.1,
            height: size.0,
            reason: "the box lies wholly outside the image".into(),
        });
    }
    let note = (c != b).then(|| format!("box {b:?} runs past the {w}x{h} image; clipped to {c:?}"));
    Ok((c, note))
}

/// Parse a box written `X0,Y0,X1,Y1` (pixels; spaces around the numbers are allowed).
///
/// Only the syntax is checked here (four finite numbers); [`validate_box`] checks the box
/// against an image.
///
/// ```
/// assert_eq!(medseg::prompt::parse_box("95, 255,190,350").unwrap(), [95.0, 255.0, 190.0, 350.0]);
/// assert!(medseg::prompt::parse_box("1,2,3").is_err());
/// assert!(medseg::prompt::parse_box("1,2,3,NaN").is_err());
/// ```
pub fn parse_box(s: &str) -> Result<[f64; 4]> {
    let bad = |why: &str| Error::InvalidPrompt(format!("box {s:?}: {why}"));
    let mut out = [0.0f64; 4];
    let mut n = 0;
    for part in s.split(',') {
        if n == 4 {
            return Err(bad("expected four numbers X0,Y0,X1,Y1, got more"));
        }
        let v: f64 = part
            .trim()
            .parse()
            .map_err(|_| bad("expected four numbers X0,Y0,X1,Y1"))?;
        if !v.is_finite() {
            return Err(bad("coordinates must be finite"));
        }
        out[n] = v;
        n += 1;
    }
    if n != 4 {
        return Err(bad("expected four numbers X0,Y0,X1,Y1"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_box_accepts_four_numbers_only() {
        assert_eq!(parse_box("1,2,3,4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(parse_box(" 1.5 , 2e1,3,4 ").unwrap(), [1.5, 20.0, 3.0, 4.0]);
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5",
            "a,b,c,d",
            "1,,3,4",
            "1,2,3,inf",
            "1;2;3;4",
        ] {
            assert!(
                matches!(parse_box(bad), Err(Error::InvalidPrompt(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn boxes_past_the_edge_are_clipped_or_refused_by_policy() {
        let size = (100, 200); // height, width
        let (b, note) = fit_box([-5.0, 10.0, 250.0, 50.0], size, BoxPolicy::Clip).unwrap();
        assert_eq!(b, [0.0, 10.0, 200.0, 50.0]);
        assert!(note
            .unwrap()
            .contains("clipped to [0.0, 10.0, 200.0, 50.0]"));
        let inside = [1.0, 2.0, 30.0, 40.0];
        assert_eq!(
            fit_box(inside, size, BoxPolicy::Clip).unwrap(),
            (inside, None)
        );
        let e = fit_box([-5.0, 10.0, 250.0, 50.0], size, BoxPolicy::Refuse).unwrap_err();
        assert!(e.to_string().contains("outside the image"), "{e}");
        for bad in [
            [300.0, 10.0, 400.0, 50.0],
            [5.0, 1.0, 2.0, 9.0],
            [f64::NAN, 1.0, 2.0, 3.0],
        ] {
            assert!(fit_box(bad, size, BoxPolicy::Clip).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validate_checks_every_part() {
        let size = (100, 200); // height, width
        assert!(Prompt::from_box([0.0, 0.0, 200.0, 100.0])
            .validate(size)
            .is_ok());
        assert!(Prompt::from_box([0.0, 0.0, 201.0, 100.0])
            .validate(size)
            .is_err());
        assert!(Prompt::from_box([10.0, 0.0, 10.0, 100.0])
            .validate(size)
            .is_err());
        assert!(Prompt::default().validate(size).is_err());
        let p = Prompt {
            points: vec![([5.0, 5.0], 2)],
            ..Default::default()
        };
        assert!(p.validate(size).is_err());
        let p = Prompt {
            mask_input: Some(vec![0.0; 10]),
            ..Default::default()
        };
        assert!(p.validate(size).is_err());
        let p = Prompt {
            mask_input: Some(vec![0.0; crate::frame::LOW_RES_LEN]),
            ..Default::default()
        };
        assert!(p.validate(size).is_ok());
    }
}
