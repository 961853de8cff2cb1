//! SAM 2's `PositionEmbeddingSine` (`sam2/modeling/position_encoding.py`): the normalised
//! sine/cosine encoding of a feature map's grid, used by the FPN neck and the memory encoder.
//! It depends only on the grid size, so it is computed on the host.

/// The encoding of an `h × w` grid with `channels` channels (the first half encodes y, the
/// second x), `[channels, h, w]` row-major; temperature 10000, coordinates `1..=n` divided by
/// `n + 1e-6` and scaled by 2π, as upstream in `float32`.
pub fn sine(channels: usize, h: usize, w: usize) -> Vec<f32> {
    let half = channels / 2;
    let scale = 2.0 * std::f32::consts::PI;
    let dim_t: Vec<f32> = (0..half)
        .map(|k| 10000f32.powf(2.0 * (k / 2) as f32 / half as f32))
        .collect();
    let embed = |i: usize, n: usize| (i + 1) as f32 / (n as f32 + 1e-6) * scale;
    let feature = |v: f32, k: usize| {
        let p = v / dim_t[k];
        if k.is_multiple_of(2) {
            p.sin()
        } else {
            p.cos()
        }
    };
    let mut out = vec![0.0f32; channels * h * w];
    for k in 0..half {
        for y in 0..h {
            for x in 0..w {
                out[(k * h + y) * w + x] = feature(embed(y, h), k);
                out[((half + k) * h + y) * w + x] = feature(embed(x, w), k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_channels_are_sin_and_cos_of_the_scaled_rows_and_columns() {
        let (c, h, w) = (8, 3, 5);
        let pe = sine(c, h, w);
        let y1 = 2.0 / (3.0 + 1e-6) * 2.0 * std::f32::consts::PI; // row 1
        assert!((pe[w] - y1.sin()).abs() < 1e-6); // channel 0, row 1, column 0
        assert!((pe[h * w + w] - y1.cos()).abs() < 1e-6); // channel 1
        let x4 = 5.0 / (5.0 + 1e-6) * 2.0 * std::f32::consts::PI; // column 4
        assert!((pe[(4 * h) * w + 4] - x4.sin()).abs() < 1e-6); // channel 4 = first x one
    }
}
