//! NIfTI-1 `.nii` / `.nii.gz` in and out. The output mask takes the input's header (affine,
//! units, orientation), so it overlays the input in any viewer. NIfTI-2 is refused clearly.

use std::io::Read;
use std::path::Path;

use ndarray::Array3;
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};

use crate::error::{Error, Result};
use crate::volume::{Modality, Volume, MODALITY_NOTE};

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Nifti {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// `sizeof_hdr` of the file (348 for NIfTI-1, 540 for NIfTI-2), either byte order.
fn header_size(path: &Path) -> Result<i32> {
    super::check_input(path)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let res = if gz {
        flate2::read::GzDecoder::new(f).read_exact(&mut head)
    } else {
        let mut f = f;
        f.read_exact(&mut head)
    };
    res.map_err(|e| bad(path, format!("cannot read the header: {e}")))?;
    let le = i32::from_le_bytes(head);
    Ok(if le == 348 || le == 540 {
        le
    } else {
        i32::from_be_bytes(head)
    })
}

/// Quaternion (qform) → 4×4 affine, per the NIfTI-1 standard.
fn qform_affine(h: &nifti::NiftiHeader) -> [[f64; 4]; 4] {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let (dx, dy, dz) = (
        h.pixdim[1] as f64,
        h.pixdim[2] as f64,
        h.pixdim[3] as f64 * qfac,
    );
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let off = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        m[i] = [r[i][0] * dx, r[i][1] * dy, r[i][2] * dz, off[i]];
    }
    m[3][3] = 1.0;
    m
}

/// Read a 3D (or 2D) NIfTI-1 volume; intensities are scaled by `scl_slope`/`scl_inter`. The
/// geometry is the sform (else the qform, else `pixdim`), and the spacing and voxel volume
/// follow it. The modality comes from the header's description when it names one, else from
/// the values (see `Volume::notes` for which was assumed).
pub fn read(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    super::guard_decoder(|| read_unguarded(path), |m| bad(path, m))
}

/// Refuse a file holding fewer data bytes than its header declares (the nifti crate indexes
/// past the end of such data when it swaps bytes). A `.nii.gz` is inflated once to count.
fn check_data_length(path: &Path, hdr: &nifti::NiftiHeader, dims: &[usize]) -> Result<()> {
    let elem = hdr
        .data_type()
        .map_err(|e| bad(path, e.to_string()))?
        .size_of() as u64;
    let offset = hdr.vox_offset.max(0.0) as u64;
    let nvox = dims.iter().map(|&d| d as u64).product::<u64>();
    let needed = offset.saturating_add(nvox * elem.max(1));
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let have = if path.to_string_lossy().to_ascii_lowercase().ends_with(".gz") {
        let mut z = flate2::read::GzDecoder::new(f).take(needed);
        std::io::copy(&mut z, &mut std::io::sink())
            .map_err(|e| bad(path, format!("cannot inflate: {e}")))?
    } else {
        f.metadata().map_err(|e| Error::io(path, e))?.len()
    };
    if have < needed {
        return Err(bad(
            path,
            format!(
                "truncated: the header declares {nvox} voxels of {elem} bytes from byte {offset} \
                 ({needed} bytes), the file holds {have}"
            ),
        ));
    }
    Ok(())
}

fn read_unguarded(path: &Path) -> Result<Volume> {
    match header_size(path)? {
        348 => {}
        540 => {
            return Err(bad(
                path,
                "NIfTI-2 is not supported; convert to NIfTI-1 (e.g. nibabel.Nifti1Image)",
            ))
        }
        n => return Err(bad(path, format!("not a NIfTI file (sizeof_hdr = {n})"))),
    }
    // The header's dimensions are checked before the data is read.
    let hdr = nifti::NiftiHeader::from_file(path).map_err(|e| bad(path, e.to_string()))?;
    let nd = (hdr.dim[0] as usize).clamp(1, 7);
    let dims: Vec<usize> = hdr.dim[1..=nd].iter().map(|&d| d as usize).collect();
    super::check_declared_size(path, &dims)?;
    check_data_length(path, &hdr, &dims)?;
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| bad(path, e.to_string()))?;
    let header = obj.header().clone();
    let nd = header.dim[0] as usize;
    if !(2..=4).contains(&nd) || (nd == 4 && header.dim[4] > 1) {
        return Err(bad(
            path,
            format!(
                "a {nd}-D image ({:?}); medseg reads 2D and 3D volumes (extract one volume of a 4D series)",
                &header.dim[1..=nd.min(7)]
            ),
        ));
    }
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| bad(path, e.to_string()))?;
    let shape = arr.shape().to_vec();
    let (nx, ny, nz) = (
        shape[0],
        shape.get(1).copied().unwrap_or(1),
        shape.get(2).copied().unwrap_or(1),
    );
    // NIfTI stores x fastest, then y, then z: `data[z][y][x]` is the reversed axes in standard
    // order, usually without a copy.
    let arr = arr.reversed_axes();
    let data = if arr.is_standard_layout() {
        let (v, offset) = arr.into_raw_vec_and_offset();
        if offset.unwrap_or(0) == 0 {
            v
        } else {
            v[offset.unwrap_or(0)..].to_vec()
        }
    } else {
        arr.iter().copied().collect()
    };
    let (affine, notes) = geometry(&header);
    let (modality, why) = guess_modality(&header, &data);
    let norm = |c: usize| (0..3).map(|r| affine[r][c].powi(2)).sum::<f64>().sqrt();
    let mut vol = Volume::new(data, [nz, ny, nx], [norm(2), norm(1), norm(0)], modality)
        .map_err(|e| bad(path, e.to_string()))?;
    vol.affine = affine;
    vol.notes = notes;
    vol.notes.push(why);
    vol.source = crate::source::Source::Nifti(Box::new(header));
    Ok(vol)
}

fn header_affine(rows: [[f32; 4]; 3]) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in rows.iter().enumerate() {
        m[r] = row.map(|v| v as f64);
    }
    m[3][3] = 1.0;
    m
}

fn det3(a: &[[f64; 4]; 4]) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

fn usable(a: &[[f64; 4]; 4]) -> bool {
    a.iter().flatten().all(|v| v.is_finite()) && det3(a).abs() > 1e-12
}

/// `pixdim` alone as an affine (1 mm where a value is not a positive number).
fn pixdim_affine(h: &nifti::NiftiHeader) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate().take(3) {
        row[i] = pixdim(h, i + 1);
    }
    m[3][3] = 1.0;
    m
}

fn pixdim(h: &nifti::NiftiHeader, i: usize) -> f64 {
    let v = h.pixdim[i].abs() as f64;
    if v.is_finite() && v > 0.0 {
        v
    } else {
        1.0
    }
}

/// The affine that is kept, as nibabel chooses it: the sform when its code is set, else the
/// qform, else `pixdim` alone, skipping a degenerate one (named in the returned notes).
fn kept_affine(h: &nifti::NiftiHeader) -> (&'static str, [[f64; 4]; 4], Vec<String>) {
    let mut candidates = Vec::new();
    if h.sform_code > 0 {
        candidates.push(("sform", header_affine([h.srow_x, h.srow_y, h.srow_z])));
    }
    if h.qform_code > 0 {
        candidates.push(("qform", qform_affine(h)));
    }
    let mut notes = Vec::new();
    for (name, a) in candidates {
        if usable(&a) {
            return (name, a, notes);
        }
        notes.push(format!("NIfTI: the {name} is degenerate and is ignored"));
    }
    ("pixdim", pixdim_affine(h), notes)
}

/// Which of the header's geometries a volume read from it uses: `"sform"`, `"qform"` or
/// `"pixdim"`.
pub fn affine_source(h: &nifti::NiftiHeader) -> &'static str {
    kept_affine(h).0
}

/// The kept affine (see [`kept_affine`]), used for every spacing and volume, and notes where
/// the header's geometries disagree.
fn geometry(h: &nifti::NiftiHeader) -> ([[f64; 4]; 4], Vec<String>) {
    let (name, kept, mut notes) = kept_affine(h);
    let qform = qform_affine(h);
    let px = |i: usize| pixdim(h, i);
    let differs =
        |a: &[[f64; 4]; 4]| (0..3).any(|r| (0..4).any(|c| (a[r][c] - kept[r][c]).abs() > 1e-3));
    if name == "sform" && h.qform_code > 0 && usable(&qform) && differs(&qform) {
        notes.push(format!(
            "NIfTI: sform and qform disagree (voxel {:.4} vs {:.4} mL); the sform is used for \
             the geometry and every volume, as nibabel does",
            det3(&kept).abs() / 1000.0,
            det3(&qform).abs() / 1000.0
        ));
    }
    let col = |a: &[[f64; 4]; 4], c: usize| (0..3).map(|r| a[r][c].powi(2)).sum::<f64>().sqrt();
    if name != "pixdim" && (0..3).any(|c| (col(&kept, c) - px(c + 1)).abs() > 1e-3) {
        notes.push(format!(
            "NIfTI: pixdim ({}, {}, {}) differs from the {name}'s voxel size ({:.4}, {:.4}, \
             {:.4}) mm; the {name} is used",
            px(1),
            px(2),
            px(3),
            col(&kept, 0),
            col(&kept, 1),
            col(&kept, 2)
        ));
    }
    (kept, notes)
}

/// CT or MR: the header's description (`descrip`, `intent_name`) when it names one, else the
/// values: Hounsfield data has air (≤ −500) in at least 1 % of its voxels and stays within
/// the HU range; an int8 file or MR data with some negative values is MR. The second value says
/// which was assumed and why.
fn guess_modality(h: &nifti::NiftiHeader, data: &[f32]) -> (Modality, String) {
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(&h.descrip),
        String::from_utf8_lossy(&h.intent_name)
    );
    let named = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(|t| match t.to_ascii_uppercase().as_str() {
            "CT" => Some(Modality::Ct),
            "MR" | "MRI" => Some(Modality::Mr),
            _ => None,
        });
    if let Some(m) = named {
        return (
            m,
            format!("{MODALITY_NOTE}{m} from the NIfTI header's description"),
        );
    }
    let (lo, hi) = crate::volume::value_range(data);
    // A CT holds air (−1000 HU) around the body in a good share of its voxels; MR data with
    // a few negative values (bias fields, resampling ringing, z-scores) does not.
    let air = data.iter().filter(|&&v| v <= -500.0).count();
    let ct = air * 100 >= data.len() && lo >= -8192.0 && hi <= 32767.0;
    let m = if ct { Modality::Ct } else { Modality::Mr };
    let why = if ct {
        "at least 1 % of the voxels are air in Hounsfield units (≤ −500)"
    } else {
        "under 1 % of the voxels are ≤ −500, no Hounsfield air"
    };
    (
        m,
        format!(
            "{MODALITY_NOTE}{m} assumed (the NIfTI header names none; values {lo}..{hi}: {why}); \
             give the modality or a window to override"
        ),
    )
}

/// What a NIfTI output may be called (the nifti crate would quietly write `x.png` as `x.nii`).
pub const NIFTI_EXTENSIONS: &[&str] = &[".nii", ".nii.gz"];

/// Write a volume's intensities as float32 NIfTI, with its header or affine.
pub fn write_volume(path: impl AsRef<Path>, vol: &Volume) -> Result<()> {
    let path = path.as_ref();
    super::output::check_extension(path, NIFTI_EXTENSIONS)?;
    let [nz, ny, nx] = vol.dims;
    let arr = Array3::from_shape_fn((nx, ny, nz), |(x, y, z)| vol.data[(z * ny + y) * nx + x]);
    let header = header_for(vol);
    nifti::writer::WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&arr)
        .map_err(|e| bad(path, e.to_string()))
}

/// The header of an output: the input's NIfTI header, or one made from the affine.
fn header_for(vol: &Volume) -> nifti::NiftiHeader {
    match vol.nifti_header() {
        Some(h) => h.clone(),
        None => {
            let sp = vol.spacing.map(|v| v as f32);
            nifti::NiftiHeader {
                pixdim: [1.0, sp[2], sp[1], sp[0], 1.0, 1.0, 1.0, 1.0],
                sform_code: 1,
                qform_code: 0,
                srow_x: vol.affine[0].map(|v| v as f32),
                srow_y: vol.affine[1].map(|v| v as f32),
                srow_z: vol.affine[2].map(|v| v as f32),
                xyzt_units: 2, // mm
                ..Default::default()
            }
        }
    }
}

/// Write a `nz × ny × nx` mask (1 inside) as NIfTI (`.nii` or `.nii.gz`), with the
/// volume's NIfTI header when it came from NIfTI, else with its affine.
pub fn write_mask(path: impl AsRef<Path>, mask: &[bool], vol: &Volume) -> Result<()> {
    let labels: Vec<u8> = mask.iter().map(|&m| u8::from(m)).collect();
    write_labels(path, &labels, vol)
}

/// Write a label volume (0 background, 1..=255 the objects) on `vol`'s grid as `uint8` NIfTI-1
/// with the volume's geometry.
pub fn write_labels(path: impl AsRef<Path>, labels: &[u8], vol: &Volume) -> Result<()> {
    let path = path.as_ref();
    super::output::check_extension(path, NIFTI_EXTENSIONS)?;
    let [nz, ny, nx] = vol.dims;
    if labels.len() != nz * ny * nx {
        return Err(bad(
            path,
            format!("mask of {} values for {:?}", labels.len(), vol.dims),
        ));
    }
    let arr = Array3::from_shape_fn((nx, ny, nz), |(x, y, z)| labels[(z * ny + y) * nx + x]);
    let mut header = header_for(vol);
    header.cal_min = 0.0;
    header.cal_max = f32::from(labels.iter().copied().max().unwrap_or(0).max(1));
    header.intent_code = 0;
    nifti::writer::WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&arr)
        .map_err(|e| bad(path, e.to_string()))
}
