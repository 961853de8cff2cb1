//! DICOM files and series (dicom-rs; pure-Rust decoders for RLE, JPEG and JPEG 2000).
//!
//! Pixels go through the Modality LUT (RescaleSlope/Intercept → Hounsfield units for CT);
//! MONOCHROME1 is inverted over the stored value range (identically on every slice); RGB is
//! averaged to grey. A series folder, or the frames of an enhanced multi-frame object, is
//! arranged by [`super::geometry`]: sorted by ImagePositionPatient along the slice normal,
//! checked for one size/spacing/orientation, duplicates, gaps and shear; the affine follows the
//! positions (LPS → RAS).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

use super::geometry::{self, Plane, UnevenSlices};
use crate::error::{Error, Result};
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
    /// Signed MONOCHROME1 pixels, inverted later over the whole series' common range.
    invert_in_series: bool,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn floats(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag).ok()??.to_multi_float64().ok()
}

fn open(path: &Path) -> Result<DefaultDicomObject> {
    check_value_lengths(path)?;
    OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| bad(path, e.to_string()))
}

/// Refuse a file whose elements declare more bytes than the file holds, before dicom-rs
/// reads it: dicom-parser allocates (and zero-fills) a value's declared length before reading
/// it, so a 17 KB file declaring a 2.8 GB value costs 2.8 GB (found by `fuzz/`'s `dicom`
/// target; the same class as GDCM's CVE-2026-3650). This walk reads element headers only, with
/// dicom-rs's own header decoders; where it cannot follow the structure (deflated data sets,
/// a header it cannot decode) it stops and leaves the verdict to dicom-rs.
fn check_value_lengths(path: &Path) -> Result<()> {
    use std::io::{BufReader, Read, Seek, SeekFrom};

    use dicom_encoding::decode::explicit_le::ExplicitVRLittleEndianDecoder;
    use dicom_encoding::decode::Decode;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    const ITEM: dicom_object::Tag = dicom_object::Tag(0xFFFE, 0xE000);
    const ITEM_END: dicom_object::Tag = dicom_object::Tag(0xFFFE, 0xE00D);
    const SEQUENCE_END: dicom_object::Tag = dicom_object::Tag(0xFFFE, 0xE0DD);

    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut src = BufReader::new(file);
    let mut pos = 0u64;
    let mut magic = [0u8; 132];
    if src.read_exact(&mut magic).is_ok() && &magic[128..] == b"DICM" {
        pos = 132;
    }
    src.seek(SeekFrom::Start(pos))
        .map_err(|e| Error::io(path, e))?;
    let too_long = |tag: dicom_object::Tag, len: u32, at: u64| {
        bad(
            path,
            format!(
                "element {tag} at byte {at} declares {len} bytes, but only {} remain in the file",
                size.saturating_sub(at)
            ),
        )
    };

    // File meta group (0002,xxxx): always explicit VR little endian.
    let meta = ExplicitVRLittleEndianDecoder::default();
    let mut ts_uid = None;
    loop {
        let mut group = [0u8; 2];
        if src.read_exact(&mut group).is_err() {
            return Ok(());
        }
        src.seek_relative(-2).map_err(|e| Error::io(path, e))?;
        if u16::from_le_bytes(group) != 0x0002 {
            break; // the first data set element: walk on with the data set's decoder
        }
        let Ok((h, n)) = meta.decode_header(&mut src) else {
            return Ok(());
        };
        pos += n as u64;
        let Some(len) = h.len.get() else {
            return Ok(());
        };
        if len as u64 > size - pos {
            return Err(too_long(h.tag, len, pos));
        }
        if h.tag == dicom_object::Tag(0x0002, 0x0010) && len <= 64 {
            let mut uid = vec![0u8; len as usize];
            src.read_exact(&mut uid).map_err(|e| Error::io(path, e))?;
            ts_uid = Some(
                String::from_utf8_lossy(&uid)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        } else {
            src.seek_relative(len as i64)
                .map_err(|e| Error::io(path, e))?;
        }
        pos += len as u64;
    }
    // No meta group: dicom-rs reads such a data set as implicit VR little endian.
    let ts = TransferSyntaxRegistry.get(ts_uid.as_deref().unwrap_or("1.2.840.10008.1.2"));
    let Some(ts) = ts else { return Ok(()) };
    if matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)) {
        return Ok(()); // deflated: the declared lengths refer to the inflated stream
    }
    let Some(decoder) = ts.decoder_for::<BufReader<std::fs::File>>() else {
        return Ok(());
    };
    // Walk every header. Sequences and items are stepped into (their content is headers);
    // inside encapsulated pixel data the items are fragments, skipped as bytes.
    let mut in_fragments = false;
    while pos < size {
        let Ok((h, n)) = decoder.decode_header(&mut src) else {
            return Ok(());
        };
        pos += n as u64;
        let len = h.len.get();
        if let Some(len) = len {
            if len as u64 > size - pos {
                return Err(too_long(h.tag, len, pos));
            }
            // dicom-parser reads `len / unit` numbers but counts `len` bytes, so a binary value
            // of a length that is not a multiple of its unit shifts every later header (one
            // such shift read a length of 0xFFFF0000 from pixel data bytes). At the end of the
            // file nothing follows, so an odd tail there is left to dicom-rs.
            let unit = binary_unit(h.vr);
            if !in_fragments && !(len as u64).is_multiple_of(unit) && pos + (len as u64) < size {
                return Err(bad(
                    path,
                    format!(
                        "element {} ({:?}) at byte {pos} has {len} bytes, not a multiple of {unit}",
                        h.tag, h.vr
                    ),
                ));
            }
        }
        let descend = if in_fragments {
            if h.tag == SEQUENCE_END {
                in_fragments = false;
            }
            h.tag != ITEM
        } else if len.is_none() {
            // As dicom-parser: undefined-length PixelData holds fragments; any other
            // undefined-length element is read as a sequence of items (a fuzzed (7FE4,0010)
            // OB was one, and its "fragment" bytes were parsed as elements).
            in_fragments = h.tag == dicom_object::Tag(0x7FE0, 0x0010);
            true
        } else {
            // Item and delimiters have no value to skip; any other (FFFE,xxxx) tag is read by
            // dicom-parser as a plain element (a fuzzed (FFFE,550D) of 86 bytes).
            h.vr == dicom_core::VR::SQ || [ITEM, ITEM_END, SEQUENCE_END].contains(&h.tag)
        };
        if !descend {
            let len = len.unwrap_or(0);
            src.seek_relative(len as i64)
                .map_err(|e| Error::io(path, e))?;
            pos += len as u64;
        }
    }
    Ok(())
}

/// `(width, height, components)` declared by a JPEG 2000 codestream (SIZ) or a JPEG frame
/// header (SOFn) at the start of a pixel data fragment; `None` for anything else. The J2K and
/// JPEG decoders allocate from these, not from the DICOM header (a fuzzed J2K frame inside a
/// small DICOM made openjp2 allocate 640 MB), so they are checked first.
fn codestream_size(f: &[u8]) -> Option<(usize, usize, usize)> {
    let be16 = |i: usize| {
        f.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let be32 = |i: usize| {
        f.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        // SOC, SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz
        let (x, y, xo, yo) = (be32(8)?, be32(12)?, be32(16)?, be32(20)?);
        return Some((x.saturating_sub(xo), y.saturating_sub(yo), be16(40)?));
    }
    if f.starts_with(&[0xFF, 0xD8]) {
        // Markers up to the first SOFn (C0-CF but C4 DHT, C8 JPG, CC DAC).
        let mut i = 2;
        while i + 4 <= f.len() {
            if f[i] != 0xFF {
                return None;
            }
            let m = f[i + 1];
            if m == 0xFF {
                i += 1;
                continue;
            }
            if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
                // Lf P Y X Nf
                return Some((be16(i + 7)?, be16(i + 5)?, *f.get(i + 9)? as usize));
            }
            i += 2 + be16(i + 2)?;
        }
    }
    None
}

/// Bytes per number of a binary VR (1 for the others).
fn binary_unit(vr: dicom_core::VR) -> u64 {
    use dicom_core::VR;
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OL | VR::OF | VR::AT => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

fn text(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

/// The first item of a sequence.
fn item(obj: &InMemDicomObject, seq: dicom_object::Tag) -> Option<&InMemDicomObject> {
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
        invert_in_series,
    }))
}

/// Compressed frames are checked before a decoder sees them: an RLE header of at most 15
/// segments (PS3.5 G.5; dicom-rs allocates the header's count first, a fuzzed one asked for
/// 814 MB), and a J2K/JPEG frame size equal to the header's rows × columns.
fn check_fragments(
    obj: &DefaultDicomObject,
    path: &Path,
    ts: &str,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let Some(frags) = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments())
    else {
        return Ok(());
    };
    for f in frags {
        if ts == "1.2.840.10008.1.2.5" {
            let n = f
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if f.len() < 64 || n.is_none_or(|n| n > 15) {
                return Err(bad(
                    path,
                    format!(
                        "RLE fragment of {} bytes with {n:?} segments (at most 15, header 64 bytes)",
                        f.len()
                    ),
                ));
            }
        }
        if let Some((w, h, c)) = codestream_size(f) {
            super::check_declared_size(path, &[h, w, c])?;
            if (w, h) != (cols, rows) {
                return Err(bad(
                    path,
                    format!(
                        "the compressed frame declares {w}x{h} pixels, the DICOM header \
                         {cols}x{rows}"
                    ),
                ));
            }
        }
    }
    Ok(())
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
    let per_frame: &[InMemDicomObject] = obj
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[]);
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
    // A multi-frame object whose frames carry no position: its frames in stored order from
    // the top-level origin (nothing to tell).
    if first.position.is_some() || origin.is_none() {
        vol.notes = stack.notes;
    }
    Ok(vol)
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
/// pixel data, are skipped), one series, arranged and checked by [`geometry`].
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
