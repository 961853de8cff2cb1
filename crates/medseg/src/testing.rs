//! Fixtures for medseg's own tests, benches, examples and demo: seeded random weights that
//! the reference script (`tests/reference/make_golden.py`) generates bit for bit, the layout
//! listing they are made from, and a synthetic lesion of known volume. Not part of the
//! segmentation API; kept out of the crate root and free to change.

use std::collections::BTreeMap;

use crate::volume::Volume;
use crate::weights::{RawTensor, StateDict};

/// A state_dict of seeded uniform random values for the given names and shapes, with every
/// float tensor randomised: the generator of `tests/reference/make_golden.py`
/// (`random_tensor`), reimplemented bit for bit so that ViT-B parity can be tested without
/// shipping a 375 MB checkpoint.
///
/// Tensor `index` (its position in `layout`), element `j`: `z = splitmix64(seed·2⁴⁰ +
/// index·2³² + j)`, `u = (z >> 40) / 2²⁴`, `s = 2u − 1`; matrices and kernels get
/// `s·√(3 / fan_in)`, 1-D `*weight` tensors `1 + 0.1 s`, everything else `0.1 s`
/// (`pos_embed`, `rel_pos_*`, biases).
pub fn seeded_random_state_dict(layout: &[(String, Vec<usize>)], seed: u64) -> StateDict {
    let mut tensors = BTreeMap::new();
    for (index, (name, shape)) in layout.iter().enumerate() {
        let n: usize = shape.iter().product();
        let base = (seed << 40).wrapping_add((index as u64) << 32);
        let fan_in: usize = shape.iter().skip(1).product();
        let matrix = shape.len() >= 2 && !name.contains("rel_pos") && !name.contains("pos_embed");
        let norm_weight = name.ends_with("weight") && shape.len() == 1;
        let data = (0..n as u64)
            .map(|j| {
                let z = splitmix64(base.wrapping_add(j));
                let s = 2.0 * ((z >> 40) as f64 / (1u64 << 24) as f64) - 1.0;
                let v = if matrix {
                    s * (3.0 / fan_in as f64).sqrt()
                } else if norm_weight {
                    1.0 + 0.1 * s
                } else {
                    0.1 * s
                };
                v as f32
            })
            .collect();
        tensors.insert(name.clone(), RawTensor::new(shape.clone(), data));
    }
    StateDict { tensors }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Parse a layout listing, one `name dim dim ...` per line (as `vit_b_layout.txt`).
pub fn parse_layout(text: &str) -> Vec<(String, Vec<usize>)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?.to_string();
            let shape = parts.filter_map(|d| d.parse().ok()).collect();
            Some((name, shape))
        })
        .collect()
}

/// Implant a SYNTHETIC lesion: an ellipsoid centred at voxel `centre` (x, y, z) with
/// semi-axes `radii_mm` (x, y, z, in mm, using the volume's spacing), set to `value`. Returns
/// the ground-truth mask. Used by the tests and the demo to make a lesion of known volume in a
/// real brain image; the result is labelled synthetic wherever it is shown.
pub fn implant_ellipsoid(
    vol: &mut Volume,
    centre: [f64; 3],
    radii_mm: [f64; 3],
    value: f32,
) -> Vec<bool> {
    let [nz, ny, nx] = vol.dims;
    let sp = [vol.spacing[2], vol.spacing[1], vol.spacing[0]];
    let mut truth = vec![false; vol.data.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let d = [
                    x as f64 - centre[0],
                    y as f64 - centre[1],
                    z as f64 - centre[2],
                ];
                let s: f64 = (0..3).map(|a| (d[a] * sp[a] / radii_mm[a]).powi(2)).sum();
                if s <= 1.0 {
                    let i = (z * ny + y) * nx + x;
                    vol.data[i] = value;
                    truth[i] = true;
                }
            }
        }
    }
    truth
}
