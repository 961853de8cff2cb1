//! Make the whole-process benchmark case of `benches/compare/compare_builds.sh`: SLICES axial
//! slices of the MNI152 template around a SYNTHETIC ellipsoid lesion reaching all of them
//! (`OUT/volume.nii.gz`), and the parity tests' seeded random MedSAM2 weights as a user's
//! checkpoint (`OUT/medsam2_seeded.safetensors`: the cost of `MedSAM2_latest.pt`). Prints the
//! key slice and box as CLI flags.
//!
//! `cargo run --release --example bench_case -- MNI.nii.gz MEDSAM2_LAYOUT.txt SLICES OUT_DIR`

use std::path::Path;

use medseg::testing::{implant_ellipsoid, parse_layout, seeded_random_state_dict};

fn main() -> medseg::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mni, layout, slices, out] = args.as_slice() else {
        eprintln!("usage: bench_case MNI.nii.gz MEDSAM2_LAYOUT.txt SLICES OUT_DIR");
        std::process::exit(2);
    };
    let Ok(slices) = slices.parse::<usize>() else {
        eprintln!("bench_case: SLICES {slices:?} is not a count");
        std::process::exit(2);
    };
    let out = Path::new(out);
    let mut vol = medseg::io::read_volume(mni)?;
    let [nz, ny, nx] = vol.dims;
    let slices = slices.clamp(1, nz);
    let z0 = (nz - slices) / 2;
    let max = vol.data.iter().copied().fold(f32::MIN, f32::max);
    let centre = [70.0, 125.0, (z0 + slices / 2) as f64];
    let radii = [12.0, 14.0, slices as f64 * 0.5 * vol.spacing[0] + 8.0];
    implant_ellipsoid(&mut vol, centre, radii, 2.0 * max);
    vol.data = vol.data[z0 * ny * nx..(z0 + slices) * ny * nx].to_vec();
    vol.dims = [slices, ny, nx];
    medseg::io::nifti::write_volume(out.join("volume.nii.gz"), &vol)?;
    let text = std::fs::read_to_string(layout).map_err(|source| medseg::Error::Io {
        path: layout.into(),
        source,
    })?;
    let mut weights = seeded_random_state_dict(&parse_layout(&text), 2024);
    // The reference scripts' OBJ_BIAS: the seeded model then finds an object on every slice.
    if let Some(b) = weights
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
    {
        b.data.iter_mut().for_each(|v| *v += 6.0);
    }
    weights.save_safetensors(out.join("medsam2_seeded.safetensors"))?;
    let (x0, y0) = (centre[0] - radii[0] - 4.0, centre[1] - radii[1] - 4.0);
    let (x1, y1) = (centre[0] + radii[0] + 4.0, centre[1] + radii[1] + 4.0);
    println!("--slice {} --box {x0},{y0},{x1},{y1}", slices / 2);
    Ok(())
}
