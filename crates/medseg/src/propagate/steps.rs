//! A 3D session as a script: the JSON list the CLI's `--prompts` file holds (and the viewer's
//! requests will), parsed here once for every front-end. Entries, applied in order:
//!
//! ```json
//! [
//!   {"slice": 24, "object": 1, "box": [60, 80, 140, 150]},
//!   {"propagate": "both"},
//!   {"slice": 30, "object": 1, "points": [[101, 96]], "labels": [0]},
//!   {"slice": 20, "object": 2, "mask": "lesion2_slice20.png"},
//!   {"clear_slice": 24, "object": 1},
//!   {"remove_object": 2},
//!   {"propagate": "forward", "start": 10, "max": 5}
//! ]
//! ```
//!
//! `object` defaults to 1; `points` need `labels` (1 positive, 0 negative); a `box` may come
//! with `points` (the box first, as SAM 2 packs them); `"clear": true` replaces the slice's
//! earlier clicks instead of adding to them (a box always does); a `mask` is a path the
//! front-end reads (relative to the script). Coordinates are image pixels of the slice.

use std::str::FromStr;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Object ids a session takes (the label map's values).
pub const MAX_OBJECT_ID: u32 = 65535;

/// Which way `VolumeSession::propagate` goes from its start slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards higher slice indices.
    Forward,
    /// Towards lower ones (`reverse=True`).
    Backward,
    /// Forward, then backward from the same start.
    Both,
}

impl FromStr for Direction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "forward" => Ok(Self::Forward),
            "backward" => Ok(Self::Backward),
            "both" => Ok(Self::Both),
            _ => Err(Error::InvalidOption(format!(
                "direction {s:?}: expected forward, backward or both"
            ))),
        }
    }
}

/// One entry of a session script.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionStep {
    /// A box and/or clicks on a slice.
    Prompt {
        /// The slice.
        slice: usize,
        /// The object id.
        object: u32,
        /// `[x0, y0, x1, y1]`.
        bbox: Option<[f64; 4]>,
        /// `([x, y], label)`.
        points: Vec<([f64; 2], i64)>,
        /// Replace the slice's earlier clicks.
        clear: bool,
    },
    /// A mask (a file the front-end reads) on a slice.
    Mask {
        /// The slice.
        slice: usize,
        /// The object id.
        object: u32,
        /// As written in the script.
        path: String,
    },
    /// Propagate.
    Propagate {
        /// Which way.
        direction: Direction,
        /// First slice (default: the earliest prompted one).
        start: Option<usize>,
        /// Slices at most.
        max: Option<usize>,
    },
    /// Clear an object's prompts on a slice.
    ClearSlice {
        /// The slice.
        slice: usize,
        /// The object id.
        object: u32,
    },
    /// Remove an object.
    RemoveObject {
        /// The object id.
        object: u32,
    },
}

/// Parse a session script (a JSON list of entries, see the module docs).
pub fn parse_steps(text: &str) -> Result<Vec<SessionStep>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidPrompt(format!("prompts: not JSON: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| Error::InvalidPrompt("prompts: expected a JSON list of entries".into()))?;
    if list.is_empty() {
        return Err(Error::InvalidPrompt("prompts: the list is empty".into()));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let obj = e.as_object().ok_or_else(|| bad(i, "not a JSON object"))?;
            step(obj).map_err(|m| bad(i, &m))
        })
        .collect()
}

fn bad(i: usize, msg: &str) -> Error {
    Error::InvalidPrompt(format!("prompts entry {i}: {msg}"))
}

type Entry = Map<String, Value>;

fn step(e: &Entry) -> std::result::Result<SessionStep, String> {
    let object = match e.get("object") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|&o| (1..=u64::from(MAX_OBJECT_ID)).contains(&o))
            .ok_or("\"object\": an id from 1 to 65535")? as u32,
    };
    if let Some(d) = e.get("propagate") {
        let direction = d
            .as_str()
            .ok_or("\"propagate\": forward, backward or both")?
            .parse::<Direction>()
            .map_err(|e| e.to_string())?;
        return Ok(SessionStep::Propagate {
            direction,
            start: index(e, "start")?,
            max: index(e, "max")?,
        });
    }
    if let Some(slice) = index(e, "clear_slice")? {
        return Ok(SessionStep::ClearSlice { slice, object });
    }
    if e.contains_key("remove_object") {
        let object = index(e, "remove_object")?.ok_or("\"remove_object\": an id")? as u32;
        return Ok(SessionStep::RemoveObject { object });
    }
    let slice =
        index(e, "slice")?.ok_or("needs \"slice\" (or propagate, clear_slice, remove_object)")?;
    if let Some(m) = e.get("mask") {
        let path = m.as_str().ok_or("\"mask\": a path")?.to_string();
        return Ok(SessionStep::Mask {
            slice,
            object,
            path,
        });
    }
    let bbox = match e.get("box") {
        None => None,
        Some(b) => Some(numbers::<4>(b).ok_or("\"box\": [x0, y0, x1, y1]")?),
    };
    let points = clicks(e)?;
    if bbox.is_none() && points.is_empty() {
        return Err("needs a \"box\", \"points\" with \"labels\", or a \"mask\"".into());
    }
    let clear = e.get("clear").and_then(Value::as_bool).unwrap_or(false) || bbox.is_some();
    Ok(SessionStep::Prompt {
        slice,
        object,
        bbox,
        points,
        clear,
    })
}

fn index(e: &Entry, key: &str) -> std::result::Result<Option<usize>, String> {
    match e.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("{key:?}: a whole number >= 0")),
    }
}

fn numbers<const N: usize>(v: &Value) -> Option<[f64; N]> {
    let a = v.as_array().filter(|a| a.len() == N)?;
    let mut out = [0.0; N];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64()?;
    }
    Some(out)
}

fn clicks(e: &Entry) -> std::result::Result<Vec<([f64; 2], i64)>, String> {
    let (Some(p), Some(l)) = (e.get("points"), e.get("labels")) else {
        return match (e.get("points"), e.get("labels")) {
            (None, None) => Ok(Vec::new()),
            _ => Err("\"points\" and \"labels\" go together".into()),
        };
    };
    let (p, l) = (
        p.as_array().ok_or("\"points\": [[x, y], ...]")?,
        l.as_array().ok_or("\"labels\": [1 or 0, ...]")?,
    );
    if p.len() != l.len() || p.is_empty() {
        return Err(format!("{} points with {} labels", p.len(), l.len()));
    }
    p.iter()
        .zip(l)
        .map(|(p, l)| {
            let xy = numbers::<2>(p).ok_or("\"points\": [[x, y], ...]")?;
            let label = l
                .as_i64()
                .ok_or("\"labels\": 1 (positive) or 0 (negative)")?;
            Ok((xy, label))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_entry_parses() {
        let s = parse_steps(
            r#"[{"slice": 3, "box": [1, 2, 30, 40]},
                {"propagate": "both"},
                {"slice": 5, "object": 2, "points": [[4, 5.5]], "labels": [0]},
                {"slice": 6, "mask": "m.png"},
                {"clear_slice": 3, "object": 1},
                {"remove_object": 2},
                {"propagate": "backward", "start": 4, "max": 2}]"#,
        )
        .unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(
            s[0],
            SessionStep::Prompt {
                slice: 3,
                object: 1,
                bbox: Some([1.0, 2.0, 30.0, 40.0]),
                points: vec![],
                clear: true
            }
        );
        assert_eq!(
            s[2],
            SessionStep::Prompt {
                slice: 5,
                object: 2,
                bbox: None,
                points: vec![([4.0, 5.5], 0)],
                clear: false
            }
        );
        assert_eq!(
            s[6],
            SessionStep::Propagate {
                direction: Direction::Backward,
                start: Some(4),
                max: Some(2)
            }
        );
        assert_eq!(s[5], SessionStep::RemoveObject { object: 2 });
    }

    #[test]
    fn bad_entries_say_which_and_why() {
        for (text, expect) in [
            ("{}", "a JSON list"),
            ("[]", "empty"),
            (r#"[{"slice": 1}]"#, "entry 0: needs a \"box\""),
            (r#"[{"slice": 1, "points": [[1, 2]]}]"#, "go together"),
            (
                r#"[{"slice": 1, "points": [[1, 2]], "labels": [1, 0]}]"#,
                "1 points with 2 labels",
            ),
            (r#"[{"propagate": "up"}]"#, "forward, backward or both"),
            (
                r#"[{"slice": -1, "box": [1, 2, 3, 4]}]"#,
                "\"slice\": a whole number",
            ),
            (
                r#"[{"slice": 1, "object": 0, "box": [1, 2, 3, 4]}]"#,
                "from 1 to 65535",
            ),
            (r#"[{"slice": 1, "box": [1, 2, 3]}]"#, "[x0, y0, x1, y1]"),
        ] {
            let e = parse_steps(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }
}
