//! DICOM Segmentation objects (SEG) out: a BINARY segmentation (1 bit per pixel) that
//! references the DICOM images a volume was read from, so that PACS viewers (OHIF, 3D Slicer,
//! Horos/OsiriX) show it over its series.
//!
//! What is written (Segmentation IOD, SOP Class 1.2.840.10008.5.1.4.1.1.66.4, Explicit VR
//! Little Endian):
//! - the Patient and General Study modules copied from the source; a new series (Modality
//!   `SEG`) in the source's Frame of Reference;
//! - one segment per object (label, coded category and type, algorithm type, name and version);
//! - one frame per (segment, slice holding mask pixels) — or per slice when asked — ordered by
//!   segment, then along the slice normal; each frame's Plane Position is its source slice's
//!   ImagePositionPatient, its Derivation Image Sequence names the source instance (and frame
//!   of a multi-frame source), its Dimension Index Values are (segment number, slice index);
//! - shared Plane Orientation and Pixel Measures equal to the source's;
//! - the Referenced Series Sequence listing every image of the source series;
//! - fresh UIDs (`2.25.` + a random 128-bit number).
//!
//! Frames are packed bit after bit with no padding between frames (the first pixel in the
//! lowest bit), as the standard requires for 1-bit data.

use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue, C};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::segment::{Code, MaskInfo, Segment};
use crate::error::{Error, Result};
use crate::source::{DicomSource, SourceSlice};
use crate::volume::Volume;

/// Segmentation Storage.
pub const SEG_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Write `masks` (one per segment, each Z × Y × X on `vol`'s grid) as a DICOM SEG at `path`.
/// `vol` must have been read from DICOM images that every slice can reference (not resampled,
/// with positions); otherwise the error says why.
pub fn write_seg(
    path: &Path,
    masks: &[(&Segment, &[bool])],
    vol: &Volume,
    all_frames: bool,
) -> Result<()> {
    let src = referenceable(vol, path)?;
    let n = vol.dims.iter().product::<usize>();
    if masks.is_empty() || masks.iter().any(|(_, m)| m.len() != n) {
        return Err(Error::InvalidImage(format!(
            "a SEG needs one mask of {n} values per segment"
        )));
    }
    let frames = frames(masks, vol, all_frames);
    let mut obj = InMemDicomObject::new_empty();
    put_modules(&mut obj, src, vol, masks, &frames);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .media_storage_sop_class_uid(SEG_SOP_CLASS_UID),
        )
        .map_err(|e| Error::dicom(path, format!("cannot build the file meta: {e}")))?;
    file.write_to_file(path)
        .map_err(|e| Error::dicom(path, format!("cannot write the SEG: {e}")))
}

/// Write one mask as a one-segment SEG (what [`super::mask::stage_mask`] calls).
pub(crate) fn write_mask_seg(
    path: &Path,
    mask: &[bool],
    vol: &Volume,
    info: &MaskInfo,
) -> Result<()> {
    write_seg(path, &[(&info.segment, mask)], vol, info.all_frames)
}

/// The volume's DICOM source, when a SEG can reference it slice by slice.
pub fn referenceable<'a>(vol: &'a Volume, dest: &Path) -> Result<&'a DicomSource> {
    let refuse = |why: String| Error::Output {
        path: dest.to_path_buf(),
        reason: format!("a DICOM SEG references the source images, and {why}"),
    };
    let src = vol.dicom_source().ok_or_else(|| {
        refuse("the input is not DICOM (write .nii.gz, .npy or .png instead)".into())
    })?;
    if let Some(why) = src.unreferenceable() {
        return Err(refuse(why));
    }
    if src.slices.len() != vol.dims[0] {
        return Err(refuse(format!(
            "{} source images for {} slices",
            src.slices.len(),
            vol.dims[0]
        )));
    }
    Ok(src)
}

/// One frame of the SEG: segment number (1-based) and slice index.
type Frame = (usize, usize);

/// The frames to write: per segment, its slices holding mask pixels (every slice when asked,
/// or when the mask is empty: a SEG has at least one frame per segment it describes).
fn frames(masks: &[(&Segment, &[bool])], vol: &Volume, all_frames: bool) -> Vec<Frame> {
    let per_slice = vol.slice_len();
    let mut out = Vec::new();
    for (s, (_, mask)) in masks.iter().enumerate() {
        let held: Vec<usize> = (0..vol.dims[0])
            .filter(|&z| all_frames || mask[z * per_slice..(z + 1) * per_slice].contains(&true))
            .collect();
        let zs = if held.is_empty() {
            (0..vol.dims[0]).collect()
        } else {
            held
        };
        out.extend(zs.into_iter().map(|z| (s + 1, z)));
    }
    out
}

fn put_modules(
    obj: &mut InMemDicomObject,
    src: &DicomSource,
    vol: &Volume,
    masks: &[(&Segment, &[bool])],
    frames: &[Frame],
) {
    put_patient_study(obj, src);
    put_series_and_image(obj, src, vol, frames.len());
    obj.put(seq(
        tags::SEGMENT_SEQUENCE,
        masks
            .iter()
            .enumerate()
            .map(|(i, (s, _))| segment_item(i + 1, s))
            .collect(),
    ));
    put_dimensions(obj);
    obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared_groups(src, vol)],
    ));
    obj.put(seq(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frames
            .iter()
            .map(|&(s, z)| frame_groups(s, z, &src.slices[z]))
            .collect(),
    ));
    obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(src)],
    ));
    let bits = pack_bits(masks, vol, frames);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(C::from_vec(bits)),
    ));
}

fn put_patient_study(obj: &mut InMemDicomObject, src: &DicomSource) {
    let p = &src.patient;
    put(obj, tags::PATIENT_NAME, VR::PN, &p.patient_name);
    put(obj, tags::PATIENT_ID, VR::LO, &p.patient_id);
    put(obj, tags::PATIENT_BIRTH_DATE, VR::DA, &p.patient_birth_date);
    put(obj, tags::PATIENT_SEX, VR::CS, &p.patient_sex);
    put(obj, tags::STUDY_INSTANCE_UID, VR::UI, &p.study_instance_uid);
    put(obj, tags::STUDY_DATE, VR::DA, &p.study_date);
    put(obj, tags::STUDY_TIME, VR::TM, &p.study_time);
    put(obj, tags::STUDY_ID, VR::SH, &p.study_id);
    put(obj, tags::ACCESSION_NUMBER, VR::SH, &p.accession_number);
    put(
        obj,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &p.referring_physician_name,
    );
}

fn put_series_and_image(obj: &mut InMemDicomObject, src: &DicomSource, vol: &Volume, n: usize) {
    let (date, time) = now();
    put(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(obj, tags::SOP_CLASS_UID, VR::UI, SEG_SOP_CLASS_UID);
    put(obj, tags::SOP_INSTANCE_UID, VR::UI, new_uid());
    put(obj, tags::MODALITY, VR::CS, "SEG");
    put(obj, tags::SERIES_INSTANCE_UID, VR::UI, new_uid());
    put(obj, tags::SERIES_NUMBER, VR::IS, "300");
    put(obj, tags::SERIES_DESCRIPTION, VR::LO, "medseg segmentation");
    put(obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(
        obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &src.frame_of_reference_uid,
    );
    put(obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put(obj, tags::MANUFACTURER, VR::LO, "medseg");
    put(obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "medseg");
    put(obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "none");
    put(
        obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    for (d, t) in [
        (tags::CONTENT_DATE, tags::CONTENT_TIME),
        (tags::INSTANCE_CREATION_DATE, tags::INSTANCE_CREATION_TIME),
        (tags::SERIES_DATE, tags::SERIES_TIME),
    ] {
        put(obj, d, VR::DA, &date);
        put(obj, t, VR::TM, &time);
    }
    put_strs(obj, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    put(obj, tags::CONTENT_LABEL, VR::CS, "MEDSEG");
    put(
        obj,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "medseg segmentation",
    );
    put(obj, tags::CONTENT_CREATOR_NAME, VR::PN, "medseg");
    put(obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put(obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
    put(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put(obj, tags::ROWS, VR::US, vol.dims[1] as u16);
    put(obj, tags::COLUMNS, VR::US, vol.dims[2] as u16);
    put(obj, tags::BITS_ALLOCATED, VR::US, 1u16);
    put(obj, tags::BITS_STORED, VR::US, 1u16);
    put(obj, tags::HIGH_BIT, VR::US, 0u16);
    put(obj, tags::PIXEL_REPRESENTATION, VR::US, 0u16);
    put(obj, tags::NUMBER_OF_FRAMES, VR::IS, n.to_string());
}

fn segment_item(number: usize, s: &Segment) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::SEGMENT_NUMBER, VR::US, number as u16);
    put(&mut item, tags::SEGMENT_LABEL, VR::LO, &s.label);
    put(
        &mut item,
        tags::SEGMENT_ALGORITHM_TYPE,
        VR::CS,
        s.algorithm_type.as_dicom(),
    );
    put(
        &mut item,
        tags::SEGMENT_ALGORITHM_NAME,
        VR::LO,
        &s.algorithm_name,
    );
    put(
        &mut item,
        tags::SEGMENT_DESCRIPTION,
        VR::LO,
        format!("{} {}", s.algorithm_name, s.algorithm_version),
    );
    item.put(seq(
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![code_item(&s.category)],
    ));
    item.put(seq(
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![code_item(&s.property_type)],
    ));
    item
}

/// Two dimensions: the referenced segment, then the plane position.
fn put_dimensions(obj: &mut InMemDicomObject) {
    let org = new_uid();
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &org);
    obj.put(seq(tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![o]));
    put(obj, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let index = |pointer: Tag, group: Tag, label: &str| {
        let mut d = InMemDicomObject::new_empty();
        d.put(DataElement::new(
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::Tags(C::from_vec(vec![pointer])),
        ));
        d.put(DataElement::new(
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::Tags(C::from_vec(vec![group])),
        ));
        put(&mut d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &org);
        put(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    obj.put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            index(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            index(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    ));
}

fn shared_groups(src: &DicomSource, vol: &Volume) -> InMemDicomObject {
    let (dr, dc) = src
        .pixel_spacing
        .unwrap_or((vol.spacing[1], vol.spacing[2]));
    let mut measures = InMemDicomObject::new_empty();
    put_ds(&mut measures, tags::PIXEL_SPACING, &[dr, dc]);
    let thickness = src.slice_thickness.unwrap_or(vol.spacing[0]);
    put_ds(&mut measures, tags::SLICE_THICKNESS, &[thickness]);
    if vol.dims[0] > 1 {
        put_ds(
            &mut measures,
            tags::SPACING_BETWEEN_SLICES,
            &[vol.spacing[0]],
        );
    }
    let mut orientation = InMemDicomObject::new_empty();
    let iop = src.orientation.unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    put_ds(&mut orientation, tags::IMAGE_ORIENTATION_PATIENT, &iop);
    let mut shared = InMemDicomObject::new_empty();
    shared.put(seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]));
    shared.put(seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]));
    shared
}

fn frame_groups(segment: usize, z: usize, slice: &SourceSlice) -> InMemDicomObject {
    let mut source = InMemDicomObject::new_empty();
    put(
        &mut source,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        &slice.sop_class_uid,
    );
    put(
        &mut source,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &slice.sop_instance_uid,
    );
    if let Some(f) = slice.frame {
        put(
            &mut source,
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            f.to_string(),
        );
    }
    // The mask lies on the source slice's pixel grid.
    put(
        &mut source,
        tags::SPATIAL_LOCATIONS_PRESERVED,
        VR::CS,
        "YES",
    );
    source.put(seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code_item(&Code::new(
            "121322",
            "DCM",
            "Source image for image processing operation",
        ))],
    ));
    let mut derivation = InMemDicomObject::new_empty();
    derivation.put(seq(
        tags::DERIVATION_CODE_SEQUENCE,
        vec![code_item(&Code::new("113076", "DCM", "Segmentation"))],
    ));
    derivation.put(seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]));
    let mut content = InMemDicomObject::new_empty();
    content.put(DataElement::new(
        tags::DIMENSION_INDEX_VALUES,
        VR::UL,
        PrimitiveValue::U32(C::from_vec(vec![segment as u32, z as u32 + 1])),
    ));
    let mut position = InMemDicomObject::new_empty();
    let p = slice.position.unwrap_or_default();
    put_ds(&mut position, tags::IMAGE_POSITION_PATIENT, &p);
    let mut ident = InMemDicomObject::new_empty();
    put(
        &mut ident,
        tags::REFERENCED_SEGMENT_NUMBER,
        VR::US,
        segment as u16,
    );
    let mut groups = InMemDicomObject::new_empty();
    groups.put(seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]));
    groups.put(seq(tags::FRAME_CONTENT_SEQUENCE, vec![content]));
    groups.put(seq(tags::PLANE_POSITION_SEQUENCE, vec![position]));
    groups.put(seq(tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![ident]));
    groups
}

/// The source series with every instance it holds (once each, in slice order).
fn referenced_series(src: &DicomSource) -> InMemDicomObject {
    let mut seen = std::collections::HashSet::new();
    let instances = src
        .slices
        .iter()
        .filter(|s| seen.insert(s.sop_instance_uid.as_str()))
        .map(|s| {
            let mut i = InMemDicomObject::new_empty();
            put(
                &mut i,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &s.sop_class_uid,
            );
            put(
                &mut i,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &s.sop_instance_uid,
            );
            i
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    put(
        &mut series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &src.series_instance_uid,
    );
    series.put(seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances));
    series
}

/// The frames' pixels, one bit each, the first pixel in the lowest bit, frames back to back;
/// padded to an even length.
fn pack_bits(masks: &[(&Segment, &[bool])], vol: &Volume, frames: &[Frame]) -> Vec<u8> {
    let per_slice = vol.slice_len();
    let total = frames.len() * per_slice;
    let mut bytes = vec![0u8; total.div_ceil(8).next_multiple_of(2)];
    let bits = frames.iter().flat_map(|&(s, z)| {
        let mask = masks[s - 1].1;
        mask[z * per_slice..(z + 1) * per_slice].iter().copied()
    });
    for (i, on) in bits.enumerate() {
        if on {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    bytes
}

fn code_item(code: &Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::CODE_VALUE, VR::SH, &code.value);
    put(
        &mut item,
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        &code.scheme,
    );
    put(&mut item, tags::CODE_MEANING, VR::LO, &code.meaning);
    item
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// What [`put`] takes: text or a 16-bit number.
trait Value {
    fn value(self) -> PrimitiveValue;
}

impl Value for &str {
    fn value(self) -> PrimitiveValue {
        PrimitiveValue::from(self)
    }
}

impl Value for &String {
    fn value(self) -> PrimitiveValue {
        PrimitiveValue::from(self.as_str())
    }
}

impl Value for String {
    fn value(self) -> PrimitiveValue {
        PrimitiveValue::from(self)
    }
}

impl Value for u16 {
    fn value(self) -> PrimitiveValue {
        PrimitiveValue::from(self)
    }
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Value) {
    obj.put(DataElement::new(tag, vr, value.value()));
}

fn put_strs(obj: &mut InMemDicomObject, tag: Tag, vr: VR, values: &[&str]) {
    let v: C<String> = values.iter().map(|s| s.to_string()).collect();
    obj.put(DataElement::new(tag, vr, PrimitiveValue::Strs(v)));
}

fn put_ds(obj: &mut InMemDicomObject, tag: Tag, values: &[f64]) {
    let v: C<String> = values.iter().map(|&x| ds(x)).collect();
    obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::Strs(v)));
}

/// A decimal string of at most 16 characters, as precise as fits.
pub(crate) fn ds(x: f64) -> String {
    let x = if x == 0.0 { 0.0 } else { x }; // no "-0"
    for decimals in (0..=14).rev() {
        let s = format!("{x:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    format!("{x:.6e}")
}

/// A new UID: `2.25.` and a random 128-bit number (ISO/IEC 9834-8, as UUIDs are).
pub fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // RandomState is seeded from the operating system's random source.
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u64(count);
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    let n = (u128::from(half(1)) << 64) | u128::from(half(2));
    // A version-4 UUID's fixed bits, so the number is a valid UUID.
    let n = (n & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    format!("2.25.{n}")
}

/// Today's date and the time (UTC) as DICOM DA and TM.
fn now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(4.0), "4");
        assert_eq!(ds(-83.9063), "-83.9063");
        assert_eq!(ds(0.3125), "0.3125");
        assert_eq!(ds(-0.0), "0");
        let long = ds(-123_456.123_456_79);
        assert!(
            long.len() <= 16 && long.starts_with("-123456.12345"),
            "{long}"
        );
        assert!((ds(1.0 / 3.0).parse::<f64>().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn uids_are_fresh_and_valid() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        for u in [&a, &b] {
            assert!(u.starts_with("2.25.") && u.len() <= 64, "{u}");
            assert!(u[5..].chars().all(|c| c.is_ascii_digit()) && !u[5..].starts_with('0'));
        }
        let (date, time) = now();
        assert_eq!((date.len(), time.len()), (8, 6));
        assert!(date.as_str() >= "20240101", "{date}");
    }
}
