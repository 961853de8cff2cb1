//! Where a volume came from (no Burn, no I/O): what an output must keep, or reference, to line
//! up with its input — the NIfTI header a mask is written with, the DICOM instances a DICOM
//! Segmentation (SEG) points back to.

/// Where a [`Volume`](crate::Volume) came from.
#[derive(Debug, Clone, Default)]
pub enum Source {
    /// Values handed over by the caller (an array): nothing to reference.
    #[default]
    Array,
    /// A 2D picture (PNG, JPEG): nothing to reference.
    Image,
    /// A NIfTI file: its header, kept so an output mask overlays it exactly.
    #[cfg(feature = "nifti")]
    Nifti(Box<nifti::NiftiHeader>),
    /// DICOM images: the study, the series and the instance behind every slice.
    Dicom(Box<DicomSource>),
}

/// What a DICOM volume was read from: the patient, study and series a derived object (a SEG)
/// belongs to, and which image (and frame) each slice is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DicomSource {
    /// Patient and study attributes, copied into derived objects as they are.
    pub patient: PatientStudy,
    /// SeriesInstanceUID of the images.
    pub series_instance_uid: String,
    /// FrameOfReferenceUID (empty when the images have none).
    pub frame_of_reference_uid: String,
    /// Modality of the images (`CT`, `MR`, ...).
    pub modality: String,
    /// ImageOrientationPatient of the slices (row and column direction cosines, LPS).
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing of the slices: (between rows, between columns) in mm.
    pub pixel_spacing: Option<(f64, f64)>,
    /// SliceThickness of the images (mm).
    pub slice_thickness: Option<f64>,
    /// One entry per slice of the volume, in the volume's slice order. Empty when the slices
    /// were resampled (a resampled slice is no source image).
    pub slices: Vec<SourceSlice>,
}

/// The image one slice of a volume was read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceSlice {
    /// SOPClassUID of the image.
    pub sop_class_uid: String,
    /// SOPInstanceUID of the image.
    pub sop_instance_uid: String,
    /// The frame (1-based) of a multi-frame image; `None` for a single-frame image.
    pub frame: Option<u32>,
    /// ImagePositionPatient of the slice (LPS, mm), when the image gives it.
    pub position: Option<[f64; 3]>,
}

/// The Patient and General Study modules' attributes (as text, as stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientStudy {
    /// PatientName.
    pub patient_name: String,
    /// PatientID.
    pub patient_id: String,
    /// PatientBirthDate.
    pub patient_birth_date: String,
    /// PatientSex.
    pub patient_sex: String,
    /// StudyInstanceUID.
    pub study_instance_uid: String,
    /// StudyDate.
    pub study_date: String,
    /// StudyTime.
    pub study_time: String,
    /// StudyID.
    pub study_id: String,
    /// AccessionNumber.
    pub accession_number: String,
    /// ReferringPhysicianName.
    pub referring_physician_name: String,
}

impl DicomSource {
    /// Why no segmentation object can reference these slices one by one (resampled slices,
    /// slices without a position or an instance UID); `None` when every slice can be.
    pub fn unreferenceable(&self) -> Option<String> {
        if self.slices.is_empty() {
            return Some(
                "the slices were resampled onto a regular grid (--uneven-slices resample): \
                 they are not the source images"
                    .into(),
            );
        }
        if self.orientation.is_none() || self.pixel_spacing.is_none() {
            return Some("the images give no ImageOrientationPatient or PixelSpacing".into());
        }
        if let Some(s) = self.slices.iter().find(|s| s.position.is_none()) {
            return Some(format!(
                "image {} gives no ImagePositionPatient",
                s.sop_instance_uid
            ));
        }
        if self.study_uid_missing() || self.slices.iter().any(|s| s.sop_instance_uid.is_empty()) {
            return Some("the images lack a Study, Series or SOP Instance UID".into());
        }
        None
    }

    fn study_uid_missing(&self) -> bool {
        self.patient.study_instance_uid.is_empty() || self.series_instance_uid.is_empty()
    }
}
