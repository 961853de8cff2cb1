//! DICOM Segmentation objects (SEG) in: a BINARY SEG as one mask per segment on the grid of
//! the DICOM volume it references — to compare a result with a reference segmentation, or to
//! use it as a prompt.
//!
//! Each frame is placed by the source image its Derivation Image Sequence names (SOP Instance
//! UID, and frame number for a multi-frame source); a frame naming none is placed by its Plane
//! Position along the slice normal. Everything a hostile or foreign file could get wrong is
//! checked before a pixel is placed: the SOP class, BINARY 1-bit frames, the frame count
//! against the functional groups and the pixel data's length, the segment numbers, the size and
//! orientation against the source, every reference against the source series.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dicom::{bad, floats, item, items, open, open_header, text};
use super::seg::SEG_SOP_CLASS_UID;
use super::segment::{AlgorithmType, Code, Segment};
use crate::error::Result;
use crate::source::DicomSource;
use crate::volume::Volume;

/// What a SEG holds, without its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct SegInfo {
    /// SegmentNumber and description of each segment, in the file's order.
    pub segments: Vec<(u16, Segment)>,
    /// NumberOfFrames.
    pub frames: usize,
    /// Rows and Columns of each frame.
    pub rows: usize,
    /// Columns of each frame.
    pub cols: usize,
    /// SeriesInstanceUID of the referenced series (empty when the file names none).
    pub referenced_series: String,
    /// How many instances the Referenced Series Sequence lists.
    pub referenced_instances: usize,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
}

/// A SEG read onto its source volume's grid.
#[derive(Debug, Clone)]
pub struct SegMasks {
    /// The file's description.
    pub info: SegInfo,
    /// One Z × Y × X mask per segment, in [`SegInfo::segments`]' order.
    pub masks: Vec<Vec<bool>>,
}

/// Whether `path` is a DICOM Segmentation object (reads the header only when it is DICOM).
pub fn is_seg(path: &Path) -> bool {
    super::check_input(path).is_ok()
        && super::input_kind(path) == super::InputKind::Dicom
        && super::guard_decoder(
            || Ok(text(&*open_header(path)?, tags::SOP_CLASS_UID)),
            |m| bad(path, m),
        )
        .ok()
        .flatten()
        .as_deref()
            == Some(SEG_SOP_CLASS_UID)
}

/// Describe a SEG (segments, frames, referenced series).
pub fn describe_seg(path: impl AsRef<Path>) -> Result<SegInfo> {
    let path = path.as_ref();
    super::guard_decoder(
        || Ok(header(&*open_header(path)?, path)?.0),
        |m| bad(path, m),
    )
}

/// Read a SEG onto `source`, the DICOM volume it segments (read from the series it
/// references).
pub fn read_seg(path: impl AsRef<Path>, source: &Volume) -> Result<SegMasks> {
    let path = path.as_ref();
    super::guard_decoder(|| read_unguarded(path, source), |m| bad(path, m))
}

fn read_unguarded(path: &Path, source: &Volume) -> Result<SegMasks> {
    let obj = open(path)?;
    let (info, numbers) = header(&obj, path)?;
    let src = source.dicom_source().ok_or_else(|| {
        bad(
            path,
            "a SEG is read onto the DICOM series it references; the volume given is not DICOM",
        )
    })?;
    check_against(&obj, &info, src, source, path)?;
    let per_frame = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.len() != info.frames {
        return Err(bad(
            path,
            format!(
                "{} frames declared, {} per-frame functional groups",
                info.frames,
                per_frame.len()
            ),
        ));
    }
    let bits = pixel_bits(&obj, &info, path)?;
    let shared = item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let n = source.slice_len();
    let mut masks = vec![vec![false; source.data.len()]; info.segments.len()];
    for (f, groups) in per_frame.iter().enumerate() {
        let s = frame_segment(groups, shared, &numbers, f, path)?;
        let z = frame_slice(groups, src, source, f, path)?;
        let plane = &mut masks[s][z * n..(z + 1) * n];
        for (i, v) in plane.iter_mut().enumerate() {
            let bit = f * n + i;
            *v |= bits[bit / 8] >> (bit % 8) & 1 == 1;
        }
    }
    Ok(SegMasks { info, masks })
}

/// The description, and the segment numbers in file order.
fn header(obj: &InMemDicomObject, path: &Path) -> Result<(SegInfo, Vec<u16>)> {
    let class = text(obj, tags::SOP_CLASS_UID).unwrap_or_default();
    if class != SEG_SOP_CLASS_UID {
        return Err(bad(
            path,
            format!(
                "not a Segmentation object (SOP Class {class:?}, expected {SEG_SOP_CLASS_UID})"
            ),
        ));
    }
    let kind = text(obj, tags::SEGMENTATION_TYPE).unwrap_or_default();
    if kind != "BINARY" {
        return Err(bad(
            path,
            format!("a {kind:?} segmentation: medseg reads BINARY segmentations (1 bit per pixel)"),
        ));
    }
    let num = |tag| text(obj, tag).and_then(|s| s.parse::<usize>().ok());
    let (rows, cols, frames) = (
        num(tags::ROWS),
        num(tags::COLUMNS),
        num(tags::NUMBER_OF_FRAMES),
    );
    let (Some(rows), Some(cols), Some(frames)) = (rows, cols, frames) else {
        return Err(bad(path, "Rows, Columns or NumberOfFrames missing"));
    };
    if rows == 0 || cols == 0 || frames == 0 || num(tags::BITS_ALLOCATED) != Some(1) {
        return Err(bad(
            path,
            format!("{frames} frames of {rows}×{cols}, BitsAllocated {:?}: a BINARY SEG has 1-bit frames", num(tags::BITS_ALLOCATED)),
        ));
    }
    super::check_declared_size(path, &[frames, rows, cols])?;
    let segments = segments(obj, path)?;
    let numbers = segments.iter().map(|(n, _)| *n).collect();
    let series = item(obj, tags::REFERENCED_SERIES_SEQUENCE);
    let info = SegInfo {
        segments,
        frames,
        rows,
        cols,
        referenced_series: series
            .and_then(|s| text(s, tags::SERIES_INSTANCE_UID))
            .unwrap_or_default(),
        referenced_instances: series
            .map(|s| items(s, tags::REFERENCED_INSTANCE_SEQUENCE).len())
            .unwrap_or(0),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
    };
    Ok((info, numbers))
}

fn segments(obj: &InMemDicomObject, path: &Path) -> Result<Vec<(u16, Segment)>> {
    let segment_items = items(obj, tags::SEGMENT_SEQUENCE);
    if segment_items.is_empty() {
        return Err(bad(
            path,
            "no SegmentSequence: the SEG describes no segment",
        ));
    }
    let mut out = Vec::with_capacity(segment_items.len());
    for it in segment_items {
        let number = text(it, tags::SEGMENT_NUMBER).and_then(|s| s.parse::<u16>().ok());
        let Some(number) = number.filter(|&n| n > 0) else {
            return Err(bad(path, "a segment without a valid SegmentNumber"));
        };
        if out.iter().any(|(n, _)| *n == number) {
            return Err(bad(path, format!("segment number {number} appears twice")));
        }
        let t = |tag| text(it, tag).unwrap_or_default();
        let code = |seq| {
            item(it, seq)
                .map(|c| {
                    let f = |tag| text(c, tag).unwrap_or_default();
                    Code {
                        value: f(tags::CODE_VALUE),
                        scheme: f(tags::CODING_SCHEME_DESIGNATOR),
                        meaning: f(tags::CODE_MEANING),
                    }
                })
                .unwrap_or_else(|| Code::new("", "", ""))
        };
        let algorithm_type = match t(tags::SEGMENT_ALGORITHM_TYPE).as_str() {
            "AUTOMATIC" => AlgorithmType::Automatic,
            "SEMIAUTOMATIC" => AlgorithmType::SemiAutomatic,
            _ => AlgorithmType::Manual,
        };
        // medseg writes "NAME VERSION" as the description.
        let name = t(tags::SEGMENT_ALGORITHM_NAME);
        let description = t(tags::SEGMENT_DESCRIPTION);
        let version = description
            .strip_prefix(&format!("{name} "))
            .unwrap_or(&description)
            .to_string();
        out.push((
            number,
            Segment {
                label: t(tags::SEGMENT_LABEL),
                category: code(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE),
                property_type: code(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE),
                algorithm_type,
                algorithm_name: name,
                algorithm_version: version,
            },
        ));
    }
    Ok(out)
}

/// The SEG fits the source: same frame size, series, frame of reference and orientation.
fn check_against(
    obj: &InMemDicomObject,
    info: &SegInfo,
    src: &DicomSource,
    vol: &Volume,
    path: &Path,
) -> Result<()> {
    if (info.rows, info.cols) != (vol.dims[1], vol.dims[2]) {
        return Err(bad(
            path,
            format!(
                "frames of {}×{} for source slices of {}×{}",
                info.rows, info.cols, vol.dims[1], vol.dims[2]
            ),
        ));
    }
    if !info.referenced_series.is_empty() && info.referenced_series != src.series_instance_uid {
        return Err(bad(
            path,
            format!(
                "the SEG references series {}, the volume is series {}",
                info.referenced_series, src.series_instance_uid
            ),
        ));
    }
    let for_uid = &info.frame_of_reference_uid;
    if !for_uid.is_empty()
        && !src.frame_of_reference_uid.is_empty()
        && *for_uid != src.frame_of_reference_uid
    {
        return Err(bad(
            path,
            format!(
                "Frame of Reference {for_uid} is not the source's {}",
                src.frame_of_reference_uid
            ),
        ));
    }
    let shared = item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let iop = shared
        .and_then(|g| item(g, tags::PLANE_ORIENTATION_SEQUENCE))
        .and_then(|p| floats(p, tags::IMAGE_ORIENTATION_PATIENT));
    if let (Some(a), Some(b)) = (iop, src.orientation) {
        if a.len() != 6 || a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3) {
            return Err(bad(
                path,
                format!("orientation {a:?} is not the source's {b:?}"),
            ));
        }
    }
    Ok(())
}

/// The pixel data (native, not encapsulated), long enough for every frame.
fn pixel_bits<'a>(
    obj: &'a InMemDicomObject,
    info: &SegInfo,
    path: &Path,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    let el = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| bad(path, "no PixelData"))?;
    if el.value().fragments().is_some() {
        return Err(bad(
            path,
            "encapsulated (compressed) SEG pixel data: medseg reads native 1-bit frames",
        ));
    }
    let bytes = el
        .to_bytes()
        .map_err(|e| bad(path, format!("PixelData: {e}")))?;
    let need = (info.frames * info.rows * info.cols).div_ceil(8);
    if bytes.len() < need {
        return Err(bad(
            path,
            format!(
                "PixelData holds {} bytes; {} frames of {}×{} bits need {need}",
                bytes.len(),
                info.frames,
                info.rows,
                info.cols
            ),
        ));
    }
    Ok(bytes)
}

/// Index (into the segment list) of the segment frame `f` belongs to.
fn frame_segment(
    groups: &InMemDicomObject,
    shared: Option<&InMemDicomObject>,
    numbers: &[u16],
    f: usize,
    path: &Path,
) -> Result<usize> {
    let number = [Some(groups), shared]
        .into_iter()
        .flatten()
        .find_map(|g| item(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE))
        .and_then(|i| text(i, tags::REFERENCED_SEGMENT_NUMBER))
        .and_then(|s| s.parse::<u16>().ok());
    match number {
        Some(n) => numbers.iter().position(|&m| m == n).ok_or_else(|| {
            bad(
                path,
                format!(
                    "frame {} refers to segment {n}, which the SEG does not describe",
                    f + 1
                ),
            )
        }),
        None if numbers.len() == 1 => Ok(0),
        None => Err(bad(path, format!("frame {} names no segment", f + 1))),
    }
}

/// The source slice frame `f` lies on: the instance it was derived from, else its position.
fn frame_slice(
    groups: &InMemDicomObject,
    src: &DicomSource,
    vol: &Volume,
    f: usize,
    path: &Path,
) -> Result<usize> {
    let source = item(groups, tags::DERIVATION_IMAGE_SEQUENCE)
        .and_then(|d| item(d, tags::SOURCE_IMAGE_SEQUENCE));
    if let Some(s) = source {
        let uid = text(s, tags::REFERENCED_SOP_INSTANCE_UID).unwrap_or_default();
        let frame = text(s, tags::REFERENCED_FRAME_NUMBER).and_then(|v| v.parse::<u32>().ok());
        let hit = src
            .slices
            .iter()
            .position(|sl| sl.sop_instance_uid == uid && (frame.is_none() || sl.frame == frame));
        return hit.ok_or_else(|| {
            bad(path, format!("frame {} was derived from image {uid}{}, which is not a slice of the source volume", f + 1, frame.map(|k| format!(" frame {k}")).unwrap_or_default()))
        });
    }
    let pos = item(groups, tags::PLANE_POSITION_SEQUENCE)
        .and_then(|p| floats(p, tags::IMAGE_POSITION_PATIENT))
        .filter(|p| p.len() == 3 && p.iter().all(|v| v.is_finite()))
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "frame {} names neither a source image nor a position",
                    f + 1
                ),
            )
        })?;
    let tol = super::geometry::step_tolerance(vol.spacing[0]);
    src.slices
        .iter()
        .position(|sl| {
            sl.position
                .is_some_and(|q| q.iter().zip(&pos).all(|(a, b)| (a - b).abs() <= tol))
        })
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "frame {} lies at {pos:?}, on no slice of the source volume",
                    f + 1
                ),
            )
        })
}
