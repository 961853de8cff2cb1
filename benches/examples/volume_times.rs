//! medseg's side of `benches/compare/compare_volume.sh`: one box → a whole volume, timed.
//!
//! `volume_times lite|vitb|medsam2 SLICES [OUT]` (threads: `RAYON_NUM_THREADS`). The volume is SLICES
//! axial slices of the MNI152 2009a T1 template (nilearn, `tests/data/fetch.sh`) around a
//! SYNTHETIC ellipsoid lesion (`medseg::testing::implant_ellipsoid`) that reaches every slice;
//! the propagation runs as LiteMedSAM's official 3D script does (every slice of the range, the
//! key box when a mask comes back empty, no drift stop), so both sides do the same work.
//! `lite` is the official checkpoint, `vitb` the seeded random ViT-B (same cost as MedSAM),
//! `medsam2` the parity tests' seeded random MedSAM2 (same cost as `MedSAM2_latest.pt`; its
//! propagation is MedSAM2's own: both passes over every slice, by memory).
//!
//! Prints one JSON object: slices, total seconds, slices/s, the time spent mapping slices to
//! 8 bits and into the model frame (the part that could overlap the encoder), peak RSS. With
//! OUT, also writes what the PyTorch side needs: `OUT.u8` (the 8-bit volume, z-major),
//! `OUT.json` (dims, key slice, box) and `OUT.mask.u8` (medseg's mask, to compare).

use std::time::Instant;

use medseg::testing::{implant_ellipsoid, parse_layout, seeded_random_state_dict};
use medseg::volume::to_u8;
use medseg::weights::{self, StateDict};
use medseg::{io, EmptySlice, Image, Intensity, ModelFamily, Segmenter, VolumeOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn io_err(path: &std::path::Path, e: std::io::Error) -> medseg::Error {
    medseg::Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// The template cut to `slices` around a lesion reaching all of them; key slice and box.
fn volume(
    root: &std::path::Path,
    slices: usize,
) -> medseg::Result<(medseg::Volume, usize, [f64; 4])> {
    let mni = root.join("target/testdata/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
    let mut vol = io::read_volume(&mni)?;
    let [nz, ny, nx] = vol.dims;
    let slices = slices.clamp(1, nz);
    let max = vol.data.iter().copied().fold(f32::MIN, f32::max);
    let z0 = (nz - slices) / 2;
    let centre = [70.0, 125.0, (z0 + slices / 2) as f64];
    let radii = [12.0, 14.0, slices as f64 * 0.5 * vol.spacing[0] + 8.0];
    implant_ellipsoid(&mut vol, centre, radii, 2.0 * max);
    vol.data = vol.data[z0 * ny * nx..(z0 + slices) * ny * nx].to_vec();
    vol.dims = [slices, ny, nx];
    let bbox = [
        centre[0] - radii[0] - 4.0,
        centre[1] - radii[1] - 4.0,
        centre[0] + radii[0] + 4.0,
        centre[1] + radii[1] + 4.0,
    ];
    Ok((vol, slices / 2, bbox))
}

/// Seeded random weights (seed 2024) of the layout `tests/fixtures/golden/{file}`.
fn seeded(root: &std::path::Path, file: &str) -> medseg::Result<StateDict> {
    let path = root.join("tests/fixtures/golden").join(file);
    let layout = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    Ok(seeded_random_state_dict(&parse_layout(&layout), 2024))
}

fn segmenter(root: &std::path::Path, which: &str) -> medseg::Result<Segmenter> {
    let device = medseg::cpu();
    match which {
        "vitb" => {
            let sd = seeded(root, "vit_b_layout.txt")?;
            Segmenter::from_state_dict(ModelFamily::MedSam, &sd, &device)
        }
        "medsam2" => {
            let mut sd = seeded(root, "medsam2_layout.txt")?;
            // As the parity tests and torch_medsam2.py: make the object present.
            if let Some(b) = sd
                .tensors
                .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
            {
                b.data.iter_mut().for_each(|v| *v += 6.0);
            }
            Segmenter::from_state_dict(ModelFamily::MedSam2, &sd, &device)
        }
        _ => {
            let sd = StateDict::load(weights::fetch_default()?)?;
            Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &device)
        }
    }
}

fn main() -> medseg::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let precision = medseg_benches::take_precision(&mut args)?;
    let which = args.get(1).map(String::as_str).unwrap_or("lite");
    let slices: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let out = args.get(3).map(std::path::PathBuf::from);
    let root = std::env::var_os("MEDSEG_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let seg = segmenter(&root, which)?.with_precision(precision);
    let (vol, key, bbox) = volume(&root, slices)?;
    let mut opts = VolumeOptions::new(key, bbox);
    opts.intensity = Some(Intensity::MinMax);
    opts.on_empty = EmptySlice::KeyBoxFallback;
    opts.max_intensity_drift = None;

    let t = Instant::now();
    let res = seg.segment_volume(&vol, &opts, &mut |_, _| {})?;
    let total = t.elapsed().as_secs_f64();

    // The host-side part of each slice: 8 bits, then into the model frame.
    let t = Instant::now();
    let u8vol = to_u8(&vol.data, Intensity::MinMax);
    let [nz, ny, nx] = vol.dims;
    for z in 0..nz {
        let image = Image::new(nx, ny, 1, u8vol[z * ny * nx..(z + 1) * ny * nx].to_vec())?;
        let _ = seg.preprocess(&image)?;
    }
    let host = t.elapsed().as_secs_f64();

    if let Some(out) = out {
        let with = |ext: &str| out.with_extension(ext);
        std::fs::write(with("u8"), &u8vol).map_err(|e| io_err(&with("u8"), e))?;
        let mask: Vec<u8> = res.mask.iter().map(|&m| u8::from(m)).collect();
        std::fs::write(with("mask.u8"), mask).map_err(|e| io_err(&with("mask.u8"), e))?;
        let json = format!(
            "{{\"dims\": [{nz}, {ny}, {nx}], \"key\": {key}, \"box\": [{}, {}, {}, {}]}}",
            bbox[0], bbox[1], bbox[2], bbox[3]
        );
        std::fs::write(with("json"), json).map_err(|e| io_err(&with("json"), e))?;
    }
    println!(
        "{{\"model\": \"{which}\", \"precision\": \"{}\", \"slices\": {}, \"total_s\": {total:.3}, \"slices_per_s\": {:.3}, \"host_s\": {host:.3}, \"voxels\": {}, \"peak_rss_mb\": {:.0}}}",
        seg.precision(),
        res.slices_run.len(),
        res.slices_run.len() as f64 / total,
        res.stats.voxels,
        medseg_benches::peak_rss_mb()
    );
    Ok(())
}
