//! DICOM files and series (dicom-rs; pure-Rust decoders for RLE, JPEG and JPEG 2000).
//!
//! Pixels go through the Modality LUT (RescaleSlope/Intercept → Hounsfield units for CT);
//! MONOCHROME1 is inverted; RGB is averaged to grey. A series folder is sorted by
//! ImagePositionPatient along the slice normal (InstanceNumber when positions are absent);
//! the slice spacing comes from the positions.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

use crate::error::{Error, Result};
use crate::volume::{Modality, Volume};

struct Slice {
    path: PathBuf,
    pixels: Vec<f32>,
    rows: usize,
    cols: usize,
    frames: usize,
    position: Option<[f64; 3]>,
    orientation: Option<[f64; 6]>,
    pixel_spacing: (f64, f64),
    thickness: Option<f64>,
    between: Option<f64>,
    instance: Option<i64>,
    series: Option<String>,
    modality: Modality,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn floats(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<Vec<f64>> {
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

fn read_slice(path: &Path) -> Result<Slice> {
    super::guard_decoder(|| read_slice_unguarded(path), |m| bad(path, m))
}

fn read_slice_unguarded(path: &Path) -> Result<Slice> {
    let obj = open(path)?;
    // Declared size, checked before the pixel data is decoded.
    let dim = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(1) as usize
    };
    super::check_declared_size(
        path,
        &[
            dim(tags::ROWS),
            dim(tags::COLUMNS),
            dim(tags::NUMBER_OF_FRAMES),
            dim(tags::SAMPLES_PER_PIXEL),
        ],
    )?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if let Some(frags) = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments())
    {
        let (rows, cols) = (dim(tags::ROWS), dim(tags::COLUMNS));
        for f in frags {
            // RLE Lossless: a 64-byte header of at most 15 segment offsets (PS3.5 G.5).
            // dicom-rs allocates the header's segment count before checking it (a fuzzed
            // count asked for 814 MB).
            if ts == "1.2.840.10008.1.2.5" {
                let n = f
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if f.len() < 64 || n.is_none_or(|n| n > 15) {
                    return Err(bad(
                        path,
                        format!(
                            "RLE fragment of {} bytes with {n:?} segments (at most 15, header \
                             64 bytes)",
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
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        use dicom_encoding::TransferSyntaxIndex;
        use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
        match TransferSyntaxRegistry.get(&ts) {
            Some(t) if !t.is_codec_free() => Error::UnsupportedTransferSyntax {
                path: path.to_path_buf(),
                uid: ts.clone(),
                name: format!("{} ({e})", t.name()),
            },
            _ => bad(path, format!("cannot decode pixel data: {e}")),
        }
    })?;
    let rows = decoded.rows() as usize;
    let cols = decoded.columns() as usize;
    let frames = decoded.number_of_frames() as usize;
    let spp = decoded.samples_per_pixel() as usize;
    let photometric = decoded.photometric_interpretation().to_string();
    let raw: Vec<f32> = decoded
        .to_vec::<f32>()
        .map_err(|e| bad(path, format!("cannot convert pixel data: {e}")))?;
    if rows == 0 || cols == 0 || raw.len() != rows * cols * frames * spp {
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
    if photometric.trim() == "MONOCHROME1" {
        let mn = pixels.iter().copied().fold(f32::MAX, f32::min);
        let mx = pixels.iter().copied().fold(f32::MIN, f32::max);
        pixels.iter_mut().for_each(|v| *v = mx + mn - *v);
    }
    let ps = floats(&obj, tags::PIXEL_SPACING)
        .or_else(|| floats(&obj, tags::IMAGER_PIXEL_SPACING))
        .filter(|v| v.len() == 2 && v.iter().all(|s| s.is_finite() && *s > 0.0))
        .map(|v| (v[0], v[1]))
        .unwrap_or((1.0, 1.0));
    let text = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
    };
    let modality = match text(tags::MODALITY).as_deref() {
        Some("CT") => Modality::Ct,
        Some("MR") => Modality::Mr,
        _ => Modality::Other,
    };
    Ok(Slice {
        path: path.to_path_buf(),
        pixels,
        rows,
        cols,
        frames,
        position: floats(&obj, tags::IMAGE_POSITION_PATIENT)
            .filter(|v| v.len() == 3)
            .map(|v| [v[0], v[1], v[2]]),
        orientation: floats(&obj, tags::IMAGE_ORIENTATION_PATIENT)
            .filter(|v| v.len() == 6)
            .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]),
        pixel_spacing: ps,
        thickness: floats(&obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        between: floats(&obj, tags::SPACING_BETWEEN_SLICES).and_then(|v| v.first().copied()),
        instance: text(tags::INSTANCE_NUMBER).and_then(|s| s.parse().ok()),
        series: text(tags::SERIES_INSTANCE_UID),
        modality,
    })
}

fn normal(o: &[f64; 6]) -> [f64; 3] {
    [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ]
}

fn build(slices: Vec<Slice>, spacing_z: f64, origin: &Path) -> Result<Volume> {
    let first = &slices[0];
    let (rows, cols, modality) = (first.rows, first.cols, first.modality);
    let frames: usize = slices.iter().map(|s| s.frames).sum();
    let mut data = Vec::with_capacity(frames * rows * cols);
    for s in &slices {
        if (s.rows, s.cols) != (rows, cols) {
            return Err(bad(
                &s.path,
                format!(
                    "slice is {}×{}, the series is {rows}×{cols}",
                    s.rows, s.cols
                ),
            ));
        }
        data.extend_from_slice(&s.pixels);
    }
    let (dr, dc) = first.pixel_spacing;
    let mut vol = Volume::new(data, [frames, rows, cols], [spacing_z, dr, dc], modality)
        .map_err(|e| bad(origin, e.to_string()))?;
    if let (Some(p), Some(o)) = (first.position, first.orientation) {
        let n = normal(&o);
        // LPS → RAS: negate the first two world axes.
        let sgn = [-1.0, -1.0, 1.0];
        for r in 0..3 {
            vol.affine[r] = [
                sgn[r] * o[r] * dc,
                sgn[r] * o[3 + r] * dr,
                sgn[r] * n[r] * spacing_z,
                sgn[r] * p[r],
            ];
        }
    }
    Ok(vol)
}

/// Read one DICOM file (a single slice, or every frame of a multi-frame image).
pub fn read_file(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    let s = read_slice(path)?;
    let dz = s
        .between
        .or(s.thickness)
        .filter(|v| *v > 0.0)
        .unwrap_or(1.0);
    build(vec![s], dz, path)
}

/// Read a series folder: every DICOM file in it (non-DICOM files are skipped), one series.
pub fn read_series(dir: impl AsRef<Path>) -> Result<Volume> {
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
    let mut slices = paths
        .iter()
        .map(|p| read_slice(p))
        .collect::<Result<Vec<_>>>()?;
    let series: std::collections::BTreeSet<_> =
        slices.iter().filter_map(|s| s.series.clone()).collect();
    if series.len() > 1 {
        return Err(bad(
            dir,
            format!(
                "{} series in one folder ({}); give one series per folder",
                series.len(),
                {
                    let v: Vec<_> = series.into_iter().collect();
                    v.join(", ")
                }
            ),
        ));
    }
    let positioned = slices
        .iter()
        .all(|s| s.position.is_some() && s.orientation.is_some());
    let mut dz = None;
    if positioned {
        let n = normal(&slices[0].orientation.unwrap());
        let key = |s: &Slice| {
            let p = s.position.unwrap();
            p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
        };
        slices.sort_by(|a, b| key(a).total_cmp(&key(b)));
        if slices.len() > 1 {
            let mut d: Vec<f64> = slices.windows(2).map(|w| key(&w[1]) - key(&w[0])).collect();
            d.sort_by(|a, b| a.total_cmp(b));
            let med = d[d.len() / 2];
            if med <= 1e-6 {
                return Err(bad(dir, "two slices share one position"));
            }
            dz = Some(med);
        }
    } else {
        slices.sort_by_key(|s| s.instance.unwrap_or(i64::MAX));
    }
    let dz = dz
        .or(slices[0].between)
        .or(slices[0].thickness)
        .filter(|v| *v > 0.0)
        .unwrap_or(1.0);
    build(slices, dz, dir)
}
