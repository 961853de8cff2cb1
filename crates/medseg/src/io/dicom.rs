//! DICOM files and series (dicom-rs; pure-Rust decoders for RLE, JPEG and JPEG 2000).
//!
//! Pixels go through the Modality LUT (RescaleSlope/Intercept → Hounsfield units for CT);
//! MONOCHROME1 is inverted over the stored value range (identically on every slice); RGB is
//! averaged to grey. A series folder, or the frames of an enhanced multi-frame object, is
//! arranged by `io::geometry` (private): sorted by ImagePositionPatient along the slice normal,
//! checked for one size/spacing/orientation, duplicates, gaps and shear; the affine follows the
//! positions (LPS → RAS).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

use super::dicom_guard::{check_fragments, check_value_lengths};
use super::geometry::{self, Plane, UnevenSlices};
use crate::error::{Error, Result};
use crate::source::{DicomSource, PatientStudy, Source, SourceSlice};
use crate::volume::{Modality, Volume};

/// What one DICOM image file holds: its frames' pixels and geometry.
struct DicomImage {
    /// One plane per frame.
    planes: Vec<Plane>,
    /// `frames × rows × cols` grey values (after the Modality LUT).
    pixels: Vec<f32>,
    /// Top-level ImagePositionPatient and orientation: the origin of a multi-frame object
    /// whose frames carry no position of their own.
    origin: Option<([f64; 3], [f64; 6])>,
    thickness: Option<f64>,
    between: Option<f64>,
    series: Option<String>,
    modality: Modality,
    /// Who and what the image belongs to (what a derived object references).
    refs: ImageRefs,
    /// Signed MONOCHROME1 pixels, inverted later over the whole series' common range.
    invert_in_series: bool,
}

/// An image's identity: its instance, and the patient, study and frame of reference it is in.
struct ImageRefs {
    sop_class_uid: String,
    sop_instance_uid: String,
    /// More than one frame (frames are then referenced by number).
    multi_frame: bool,
    patient: PatientStudy,
    frame_of_reference_uid: String,
    modality: String,
}

impl ImageRefs {
    fn of(obj: &InMemDicomObject, frames: usize) -> Self {
        let t = |tag| text(obj, tag).unwrap_or_default();
        ImageRefs {
            sop_class_uid: t(tags::SOP_CLASS_UID),
            sop_instance_uid: t(tags::SOP_INSTANCE_UID),
            multi_frame: frames > 1
                || obj
                    .element_opt(tags::NUMBER_OF_FRAMES)
                    .ok()
                    .flatten()
                    .is_some(),
            patient: PatientStudy {
                patient_name: t(tags::PATIENT_NAME),
                patient_id: t(tags::PATIENT_ID),
                patient_birth_date: t(tags::PATIENT_BIRTH_DATE),
                patient_sex: t(tags::PATIENT_SEX),
                study_instance_uid: t(tags::STUDY_INSTANCE_UID),
                study_date: t(tags::STUDY_DATE),
                study_time: t(tags::STUDY_TIME),
                study_id: t(tags::STUDY_ID),
                accession_number: t(tags::ACCESSION_NUMBER),
                referring_physician_name: t(tags::REFERRING_PHYSICIAN_NAME),
            },
            frame_of_reference_uid: t(tags::FRAME_OF_REFERENCE_UID),
            modality: t(tags::MODALITY),
        }
    }
}

pub(super) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::dicom(path, reason)
}

pub(super) fn floats(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag).ok()??.to_multi_float64().ok()
}

pub(super) fn open(path: &Path) -> Result<DefaultDicomObject> {
    open_with(path, OpenFileOptions::new())
}

/// [`open`] up to the pixel data: the attributes alone, for what describes a file.
pub(super) fn open_header(path: &Path) -> Result<DefaultDicomObject> {
    open_with(path, OpenFileOptions::new().read_until(tags::PIXEL_DATA))
}

fn open_with(path: &Path, options: OpenFileOptions) -> Result<DefaultDicomObject> {
    check_value_lengths(path)?;
    options
        .open_file(path)
        .map_err(|e| bad(path, e.to_string()))
}

pub(super) fn text(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

/// The items of a sequence (none when absent or not a sequence).
pub(super) fn items(obj: &InMemDicomObject, seq: dicom_object::Tag) -> &[InMemDicomObject] {
    obj.element_opt(seq)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// The first item of a sequence.
pub(super) fn item(obj: &InMemDicomObject, seq: dicom_object::Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(seq).ok()??.items()?.first()
}

/// Read one file; `None` for a DICOM object without pixel data (a structured report, a
/// presentation state, ...).
fn read_image(path: &Path) -> Result<Option<DicomImage>> {
    super::guard_decoder(|| read_image_unguarded(path), |m| bad(path, m))
}

fn read_image_unguarded(path: &Path) -> Result<Option<DicomImage>> {
    let obj = open(path)?;
    let has = |tag| obj.element_opt(tag).ok().flatten().is_some();
    if ![
        tags::PIXEL_DATA,
        tags::FLOAT_PIXEL_DATA,
        tags::DOUBLE_FLOAT_PIXEL_DATA,
    ]
    .into_iter()
    .any(has)
    {
        return Ok(None);
    }
    // Declared size, checked before the pixel data is decoded.
    let dim = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(1) as usize
    };
    let (rows, cols) = (dim(tags::ROWS), dim(tags::COLUMNS));
    super::check_declared_size(
        path,
        &[
            rows,
            cols,
            dim(tags::NUMBER_OF_FRAMES),
            dim(tags::SAMPLES_PER_PIXEL),
        ],
    )?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    check_fragments(&obj, path, &ts, rows, cols)?;
    let (pixels, rows, cols, frames, invert_in_series) = decode_grey(&obj, path, &ts)?;
    let modality = match text(&obj, tags::MODALITY).as_deref() {
        Some("CT") => Modality::Ct,
        Some("MR") => Modality::Mr,
        _ => Modality::Other,
    };
    let ipp = floats(&obj, tags::IMAGE_POSITION_PATIENT).and_then(|v| v3(&v));
    let iop = floats(&obj, tags::IMAGE_ORIENTATION_PATIENT).and_then(|v| v6(&v));
    Ok(Some(DicomImage {
        planes: frame_planes(&obj, path, rows, cols, frames),
        pixels,
        origin: ipp.zip(iop),
        thickness: floats(&obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        between: floats(&obj, tags::SPACING_BETWEEN_SLICES).and_then(|v| v.first().copied()),
        series: text(&obj, tags::SERIES_INSTANCE_UID),
        modality,
        refs: ImageRefs::of(&obj, frames),
        invert_in_series,
    }))
}

/// Decoded grey values (Modality LUT applied; RGB averaged; unsigned MONOCHROME1 inverted),
/// `(rows, cols, frames)`, and whether the values are signed MONOCHROME1, left to be inverted
/// over the series' common range (a signed stored range would make them negative).
fn decode_grey(
    obj: &DefaultDicomObject,
    path: &Path,
    ts: &str,
) -> Result<(Vec<f32>, usize, usize, usize, bool)> {
    let decoded = obj.decode_pixel_data().map_err(|e| {
        use dicom_encoding::TransferSyntaxIndex;
        use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
        match TransferSyntaxRegistry.get(ts) {
            Some(t) if !t.is_codec_free() => Error::UnsupportedTransferSyntax {
                path: path.to_path_buf(),
                uid: ts.to_string(),
                name: format!("{} ({e})", t.name()),
            },
            _ => bad(path, format!("cannot decode pixel data: {e}")),
        }
    })?;
    let rows = decoded.rows() as usize;
    let cols = decoded.columns() as usize;
    let frames = decoded.number_of_frames() as usize;
    let spp = decoded.samples_per_pixel() as usize;
    let raw: Vec<f32> = decoded
        .to_vec::<f32>()
        .map_err(|e| bad(path, format!("cannot convert pixel data: {e}")))?;
    if rows == 0 || cols == 0 || frames == 0 || raw.len() != rows * cols * frames * spp {
        return Err(bad(
            path,
            format!(
                "pixel data holds {} values for {frames}×{rows}×{cols}×{spp}",
                raw.len()
            ),
        ));
    }
    let mut pixels: Vec<f32> = if spp == 1 {
        raw
    } else {
        raw.chunks_exact(spp)
            .map(|p| p.iter().sum::<f32>() / spp as f32)
            .collect()
    };
    let monochrome1 = decoded.photometric_interpretation().as_str().trim() == "MONOCHROME1";
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    if monochrome1 && !signed {
        invert_monochrome1(&mut pixels, &decoded, frames).map_err(|m| bad(path, m))?;
    }
    Ok((pixels, rows, cols, frames, monochrome1 && signed))
}

/// Unsigned MONOCHROME1 (low values white): every value `v` becomes `R(0) + R(hi) − v`, where
/// `0..=hi` is the stored range (`hi = 2^BitsStored − 1`) and `R` the frame's rescale. The same
/// mapping for every slice and frame, whatever each one holds.
fn invert_monochrome1(
    pixels: &mut [f32],
    decoded: &dicom_pixeldata::DecodedPixelData<'_>,
    frames: usize,
) -> std::result::Result<(), String> {
    let bits = decoded.bits_stored().clamp(1, 32) as i32;
    let (lo, hi) = (0.0, 2f64.powi(bits) - 1.0);
    let rescale = decoded.rescale().map_err(|e| e.to_string())?;
    let per_frame = pixels.len() / frames;
    for (f, frame) in pixels.chunks_mut(per_frame).enumerate() {
        let r = rescale.get(f).unwrap_or(&rescale[0]);
        let sum = (r.slope * (lo + hi) + 2.0 * r.intercept) as f32;
        frame.iter_mut().for_each(|v| *v = sum - *v);
    }
    Ok(())
}

/// Three finite numbers (a non-finite position counts as none).
fn v3(v: &[f64]) -> Option<[f64; 3]> {
    v.try_into()
        .ok()
        .filter(|a: &[f64; 3]| a.iter().all(|x| x.is_finite()))
}

/// Six finite numbers.
fn v6(v: &[f64]) -> Option<[f64; 6]> {
    v.try_into()
        .ok()
        .filter(|a: &[f64; 6]| a.iter().all(|x| x.is_finite()))
}

fn spacing_pair(v: Vec<f64>) -> Option<(f64, f64)> {
    (v.len() == 2 && v.iter().all(|s| s.is_finite() && *s > 0.0)).then(|| (v[0], v[1]))
}

/// One plane per frame. A single-frame image takes its top-level attributes; the frames of an
/// enhanced multi-frame object take their functional groups (per-frame, then shared), and
/// frames without a PlanePositionSequence have no position (the top-level one is the origin).
fn frame_planes(
    obj: &InMemDicomObject,
    path: &Path,
    rows: usize,
    cols: usize,
    frames: usize,
) -> Vec<Plane> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let single = frames == 1 && per_frame.is_empty();
    (0..frames)
        .map(|f| {
            let groups: Vec<&InMemDicomObject> =
                per_frame.get(f).into_iter().chain(shared).collect();
            let grouped = |seq, tag| {
                groups
                    .iter()
                    .find_map(|g| item(g, seq).and_then(|i| floats(i, tag)))
            };
            let top = |tag| floats(obj, tag);
            let position = if single {
                top(tags::IMAGE_POSITION_PATIENT)
            } else {
                grouped(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
            };
            let orientation = grouped(
                tags::PLANE_ORIENTATION_SEQUENCE,
                tags::IMAGE_ORIENTATION_PATIENT,
            )
            .or_else(|| top(tags::IMAGE_ORIENTATION_PATIENT));
            let spacing = grouped(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
                .or_else(|| top(tags::PIXEL_SPACING))
                .or_else(|| top(tags::IMAGER_PIXEL_SPACING));
            Plane {
                label: if single {
                    name.clone()
                } else {
                    format!("{name} frame {}", f + 1)
                },
                position: position.and_then(|v| v3(&v)),
                orientation: orientation.and_then(|v| v6(&v)),
                rows,
                cols,
                pixel_spacing: spacing.and_then(spacing_pair),
                instance: text(obj, tags::INSTANCE_NUMBER).and_then(|s| s.parse().ok()),
                uid: single.then(|| text(obj, tags::SOP_INSTANCE_UID)).flatten(),
            }
        })
        .collect()
}

/// Signed MONOCHROME1 images: `v → min + max − v` with the minimum and maximum over all of
/// them, one mapping for the whole series.
fn invert_signed_monochrome1(images: &mut [DicomImage]) {
    let (lo, hi) = images
        .iter()
        .filter(|im| im.invert_in_series)
        .flat_map(|im| &im.pixels)
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    for im in images.iter_mut().filter(|im| im.invert_in_series) {
        im.pixels.iter_mut().for_each(|v| *v = lo + hi - *v);
    }
}

/// The images' frames as one volume, arranged by [`geometry::arrange`].
fn build(images: &[DicomImage], policy: UnevenSlices, origin_path: &Path) -> Result<Volume> {
    let planes: Vec<Plane> = images.iter().flat_map(|im| im.planes.clone()).collect();
    let at: Vec<(usize, usize)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, im)| (0..im.planes.len()).map(move |f| (i, f)))
        .collect();
    let frame = |k: usize| {
        let (i, f) = at[k];
        let n = planes[k].rows * planes[k].cols;
        &images[i].pixels[f * n..(f + 1) * n]
    };
    let stack = geometry::arrange(&planes, policy, |a, b| frame(a) == frame(b))
        .map_err(|m| bad(origin_path, m))?;
    let out_slices = stack.resample.as_ref().map_or(stack.order.len(), Vec::len);
    let first = &planes[stack.order[0]];
    super::check_declared_size(origin_path, &[out_slices, first.rows, first.cols])?;
    let mut data = Vec::with_capacity(out_slices * first.rows * first.cols);
    match &stack.resample {
        Some(plan) => {
            for &(a, b, w) in plan {
                let (a, b) = (frame(stack.order[a]), frame(stack.order[b]));
                data.extend(a.iter().zip(b).map(|(x, y)| x + (y - x) * w as f32));
            }
        }
        None => stack
            .order
            .iter()
            .for_each(|&k| data.extend_from_slice(frame(k))),
    }
    let (rows, cols) = (first.rows, first.cols);
    let header_dz = images[0]
        .between
        .or(images[0].thickness)
        .filter(|v| v.is_finite() && *v > 0.0);
    let dz = stack.spacing.or(header_dz);
    let (dr, dc) = first.pixel_spacing.unwrap_or((1.0, 1.0));
    let nz = data.len() / (rows * cols);
    let mut vol = Volume::new(
        data,
        [nz, rows, cols],
        [dz.unwrap_or(1.0), dr, dc],
        images[0].modality,
    )
    .map_err(|e| bad(origin_path, e.to_string()))?;
    vol.spacing_known = first.pixel_spacing.is_some() && dz.is_some();
    let origin = images[at[stack.order[0]].0].origin;
    let position = first.position.or(origin.map(|o| o.0));
    let orientation = first.orientation.or(origin.map(|o| o.1));
    if let (Some(p), Some(o)) = (position, orientation) {
        let n = geometry::normal(&o);
        let step = stack.step.unwrap_or(n.map(|c| c * vol.spacing[0]));
        // LPS → RAS: negate the first two world axes.
        let sgn = [-1.0, -1.0, 1.0];
        for r in 0..3 {
            vol.affine[r] = [
                sgn[r] * o[r] * dc,
                sgn[r] * o[3 + r] * dr,
                sgn[r] * step[r],
                sgn[r] * p[r],
            ];
        }
    }
    vol.source = Source::Dicom(Box::new(dicom_source(images, &planes, &at, &stack)));
    // A multi-frame object whose frames carry no position: its frames in stored order from
    // the top-level origin (nothing to tell).
    if first.position.is_some() || origin.is_none() {
        vol.notes = stack.notes;
    }
    Ok(vol)
}

/// The images behind the volume's slices (none when the slices were resampled).
fn dicom_source(
    images: &[DicomImage],
    planes: &[Plane],
    at: &[(usize, usize)],
    stack: &geometry::Stack,
) -> DicomSource {
    let first = &planes[stack.order[0]];
    let refs = &images[at[stack.order[0]].0].refs;
    let slices = match stack.resample {
        Some(_) => Vec::new(),
        None => stack
            .order
            .iter()
            .map(|&k| {
                let (i, f) = at[k];
                let r = &images[i].refs;
                SourceSlice {
                    sop_class_uid: r.sop_class_uid.clone(),
                    sop_instance_uid: r.sop_instance_uid.clone(),
                    frame: r.multi_frame.then_some(f as u32 + 1),
                    position: planes[k].position,
                }
            })
            .collect(),
    };
    DicomSource {
        patient: refs.patient.clone(),
        series_instance_uid: images[0].series.clone().unwrap_or_default(),
        frame_of_reference_uid: refs.frame_of_reference_uid.clone(),
        modality: refs.modality.clone(),
        orientation: first.orientation.or(images[0].origin.map(|o| o.1)),
        pixel_spacing: first.pixel_spacing,
        slice_thickness: images[0].thickness.filter(|t| t.is_finite() && *t > 0.0),
        slices,
    }
}

/// Read one DICOM file (a single slice, or every frame of a multi-frame image).
pub fn read_file(path: impl AsRef<Path>) -> Result<Volume> {
    read_file_with(path, &super::ReadOptions::default())
}

/// [`read_file`] with options (the frames of an enhanced multi-frame object are checked as a
/// series is).
pub fn read_file_with(path: impl AsRef<Path>, opts: &super::ReadOptions) -> Result<Volume> {
    let path = path.as_ref();
    let image = read_image(path)?.ok_or_else(|| {
        bad(
            path,
            "no pixel data: a DICOM object that is not an image (a report, a presentation \
             state, ...)",
        )
    })?;
    let mut images = [image];
    invert_signed_monochrome1(&mut images);
    build(&images, opts.uneven_slices, path)
}

/// Read a series folder: every DICOM image in it (other files, and DICOM objects without
/// pixel data, are skipped), one series, arranged and checked by `io::geometry`.
pub fn read_series(dir: impl AsRef<Path>) -> Result<Volume> {
    read_series_with(dir, &super::ReadOptions::default())
}

/// [`read_series`] with options (what to do with uneven slice positions).
pub fn read_series_with(dir: impl AsRef<Path>, opts: &super::ReadOptions) -> Result<Volume> {
    let dir = dir.as_ref();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && super::input_kind(p) == super::InputKind::Dicom)
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(bad(dir, "no DICOM files in the folder"));
    }
    let mut images = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    let mut voxels = 0usize;
    for p in &paths {
        match read_image(p)? {
            Some(im) => {
                // The series as a whole obeys the voxel limit, not only each file.
                voxels = voxels.saturating_add(im.pixels.len());
                super::check_declared_size(dir, &[voxels])?;
                images.push(im);
            }
            None => skipped.push(p.file_name().unwrap_or_default().to_string_lossy()),
        }
    }
    if images.is_empty() {
        return Err(bad(
            dir,
            format!(
                "no DICOM image in the folder ({} objects without pixel data)",
                skipped.len()
            ),
        ));
    }
    let series: std::collections::BTreeSet<_> =
        images.iter().filter_map(|s| s.series.clone()).collect();
    if series.len() > 1 {
        let v: Vec<_> = series.into_iter().collect();
        return Err(bad(
            dir,
            format!(
                "{} series in one folder ({}); give one series per folder",
                v.len(),
                v.join(", ")
            ),
        ));
    }
    invert_signed_monochrome1(&mut images);
    let mut vol = build(&images, opts.uneven_slices, dir)?;
    if !skipped.is_empty() {
        vol.notes.insert(
            0,
            format!(
                "skipped {} DICOM object(s) without pixel data: {}",
                skipped.len(),
                skipped.join(", ")
            ),
        );
    }
    Ok(vol)
}
