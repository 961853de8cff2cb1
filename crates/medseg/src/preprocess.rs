//! The official inference scripts' resamplers and normalisation, on plain arrays (no Burn):
//! OpenCV's `resize(INTER_AREA)` on `uint8` (LiteMedSAM), scipy's `ndimage.zoom` (order 3,
//! `mirror`) behind `skimage.transform.resize` with anti-aliasing (MedSAM), min-max
//! normalisation, PyTorch's bilinear upsampling and sigmoid. Ports of the exact arithmetic, so
//! that the model sees the same pixels. Which family uses which, and how, is
//! [`crate::frame::Frame`]'s business.

use crate::error::{Error, Result};

/// An 8-bit image, `height × width × channels` interleaved (channels 1 or 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height × width × channels` bytes.
    pub data: Vec<u8>,
}

impl Image {
    /// Wrap pixel data, checking its size.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidImage(format!(
                "empty image ({width}x{height})"
            )));
        }
        if channels != 1 && channels != 3 {
            return Err(Error::InvalidImage(format!(
                "{channels} channels; expected 1 (grey) or 3 (RGB)"
            )));
        }
        if data.len() != width * height * channels {
            return Err(Error::InvalidImage(format!(
                "{} bytes for a {width}x{height}x{channels} image",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// The image with three channels (grey repeated, as `np.repeat(img[..., None], 3, -1)`).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        Image {
            width: self.width,
            height: self.height,
            channels: 3,
            data: self.data.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }
}

/// A model-ready input: `[3, S, S]` planar `f32` and the size of the unpadded content.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `[3, size, size]` planar.
    pub data: Vec<f32>,
    /// Side of the square input.
    pub size: usize,
    /// `(h, w)` of the resized image inside the `size × size` frame.
    pub content: (usize, usize),
}

/// Min-max normalise `uint8` HWC pixels to [0, 1] (float64 as numpy does, then f32) and
/// write them planar into an `s × s` zero frame.
pub(crate) fn normalise_into_frame(px: &[u8], h: usize, w: usize, s: usize) -> Vec<f32> {
    let (lo, hi) = px
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let range = ((hi as f64) - (lo as f64)).max(1e-8);
    let mut out = vec![0.0f32; 3 * s * s];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (px[(y * w + x) * 3 + c] as f64 - lo as f64) / range;
                out[c * s * s + y * s + x] = v as f32;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// OpenCV INTER_AREA on uint8
// ---------------------------------------------------------------------------------------

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_AREA)` for `uint8` HWC data.
pub fn resize_area_u8(src: &[u8], h: usize, w: usize, cn: usize, dh: usize, dw: usize) -> Vec<u8> {
    if dh == h && dw == w {
        return src.to_vec();
    }
    let scale_x = w as f64 / dw as f64;
    let scale_y = h as f64 / dh as f64;
    if scale_x >= 1.0 && scale_y >= 1.0 {
        let (ix, iy) = (scale_x.round() as usize, scale_y.round() as usize);
        let fast = (scale_x - ix as f64).abs() < f64::EPSILON
            && (scale_y - iy as f64).abs() < f64::EPSILON;
        if fast {
            return area_fast(src, w, cn, dh, dw, ix, iy);
        }
        return area_generic(src, [h, w, cn], [dh, dw]);
    }
    linear_area_mode(src, h, w, cn, dh, dw)
}

/// Integer-factor decimation (`resizeAreaFast_`). The 2×2 case rounds half up, as OpenCV's
/// vectorised kernel does; other factors round the float mean to nearest-even.
fn area_fast(
    src: &[u8],
    w: usize,
    cn: usize,
    dh: usize,
    dw: usize,
    sx: usize,
    sy: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; dh * dw * cn];
    let area = sx * sy;
    let scale = 1.0f32 / area as f32;
    for dy in 0..dh {
        for dx in 0..dw {
            for c in 0..cn {
                let mut sum: i32 = 0;
                for ky in 0..sy {
                    for kx in 0..sx {
                        sum += src[((dy * sy + ky) * w + dx * sx + kx) * cn + c] as i32;
                    }
                }
                out[(dy * dw + dx) * cn + c] = if sx == 2 && sy == 2 {
                    ((sum + 2) >> 2) as u8
                } else {
                    round_even_u8(sum as f32 * scale)
                };
            }
        }
    }
    out
}

/// `saturate_cast<uchar>(float)`: round half to even, clamp.
fn round_even_u8(v: f32) -> u8 {
    let r = v.round_ties_even();
    r.clamp(0.0, 255.0) as u8
}

/// `computeResizeAreaTab`: (destination index, source index, weight) triples.
fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<(usize, usize, f32)> {
    let mut tab = Vec::new();
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize as f64 - fsx1);
        let mut sx1 = fsx1.ceil() as i64;
        let mut sx2 = fsx2.floor() as i64;
        sx2 = sx2.min(ssize as i64 - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push((dx, (sx1 - 1) as usize, ((sx1 as f64 - fsx1) / cell) as f32));
        }
        for sx in sx1..sx2 {
            tab.push((dx, sx as usize, (1.0 / cell) as f32));
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            tab.push((
                dx,
                sx2 as usize,
                ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
            ));
        }
    }
    tab
}

/// Non-integer decimation (`ResizeArea_Invoker`) of `[h, w, cn]` to `[dh, dw]`, accumulated
/// in `f32`.
fn area_generic(src: &[u8], [h, w, cn]: [usize; 3], [dh, dw]: [usize; 2]) -> Vec<u8> {
    let scale_x = w as f64 / dw as f64;
    let scale_y = h as f64 / dh as f64;
    let xtab = area_tab(w, dw, scale_x);
    let ytab = area_tab(h, dh, scale_y);
    let width = dw * cn;
    let mut out = vec![0u8; dh * width];
    let mut buf = vec![0f32; width];
    let mut sum = vec![0f32; width];
    let mut prev_dy = ytab[0].0;
    for &(dy, sy, beta) in &ytab {
        let row = &src[sy * w * cn..(sy + 1) * w * cn];
        buf.iter_mut().for_each(|v| *v = 0.0);
        for &(dx, sx, alpha) in &xtab {
            for c in 0..cn {
                buf[dx * cn + c] += row[sx * cn + c] as f32 * alpha;
            }
        }
        if dy != prev_dy {
            let d = &mut out[prev_dy * width..(prev_dy + 1) * width];
            for x in 0..width {
                d[x] = round_even_u8(sum[x]);
                sum[x] = beta * buf[x];
            }
            prev_dy = dy;
        } else {
            for x in 0..width {
                sum[x] += beta * buf[x];
            }
        }
    }
    let d = &mut out[prev_dy * width..(prev_dy + 1) * width];
    for x in 0..width {
        d[x] = round_even_u8(sum[x]);
    }
    out
}

/// Linear coefficients of `INTER_AREA` when enlarging: `(source index, fixed-point weights)`.
fn area_linear_tab(ssize: usize, dsize: usize) -> Vec<(usize, [i32; 2])> {
    let inv_scale = dsize as f64 / ssize as f64;
    let scale = 1.0 / inv_scale;
    (0..dsize)
        .map(|d| {
            let mut s = (d as f64 * scale).floor() as i64;
            let mut f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            f = if f <= 0.0 { 0.0 } else { f - f.floor() };
            if s >= ssize as i64 - 1 {
                f = 0.0;
                s = ssize as i64 - 1;
            }
            let a0 = ((1.0 - f) * 2048.0).round_ties_even() as i32;
            let a1 = (f * 2048.0).round_ties_even() as i32;
            (s.max(0) as usize, [a0, a1])
        })
        .collect()
}

/// `INTER_AREA` when enlarging: OpenCV's fixed-point bilinear pass with the area-mode
/// coefficients, including the rounding of its vectorised vertical kernel.
fn linear_area_mode(src: &[u8], h: usize, w: usize, cn: usize, dh: usize, dw: usize) -> Vec<u8> {
    let xt = area_linear_tab(w, dw);
    let yt = area_linear_tab(h, dh);
    let width = dw * cn;
    // Horizontal pass for one source row → i32 (Q11).
    let hrow = |sy: usize| -> Vec<i32> {
        let row = &src[sy * w * cn..(sy + 1) * w * cn];
        let mut d = vec![0i32; width];
        for (dx, &(sx, a)) in xt.iter().enumerate() {
            for c in 0..cn {
                let v0 = row[sx * cn + c] as i32;
                d[dx * cn + c] = if sx + 1 < w {
                    v0 * a[0] + row[(sx + 1) * cn + c] as i32 * a[1]
                } else {
                    v0 * 2048
                };
            }
        }
        d
    };
    let mut out = vec![0u8; dh * width];
    let rows: Vec<Vec<i32>> = (0..h).map(hrow).collect();
    for (dy, &(sy, b)) in yt.iter().enumerate() {
        let s0 = &rows[sy];
        let s1 = &rows[(sy + 1).min(h - 1)];
        let d = &mut out[dy * width..(dy + 1) * width];
        for x in 0..width {
            // OpenCV's vectorised VResizeLinearVec_32s8u: (mulhi(S0 >> 4, b0) +
            // mulhi(S1 >> 4, b1) + 2) >> 2. It also covers the row tails (checked against
            // cv2 on widths that are not multiples of the vector width), so the scalar
            // rounding `(S0 b0 + S1 b1 + 2^21) >> 22` is never used.
            let t0 = (((s0[x] >> 4) as i16 as i32) * b[0]) >> 16;
            let t1 = (((s1[x] >> 4) as i16 as i32) * b[1]) >> 16;
            d[x] = ((t0 + t1 + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// skimage.transform.resize(order=3, anti_aliasing=True, preserve_range=True) → uint8
// ---------------------------------------------------------------------------------------

/// `scipy.ndimage` `mirror` boundary for an index.
fn mirror_index(i: i64, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let n = len as i64;
    let sz2 = 2 * n - 2;
    let mut i = i;
    if i < 0 {
        i = -i;
    }
    i -= sz2 * (i / sz2);
    if i >= n {
        i = sz2 - i;
    }
    i as usize
}

/// `map_coordinate` for `mirror` on a float coordinate.
fn mirror_coord(mut c: f64, len: usize) -> f64 {
    let n = len as f64;
    if c < 0.0 {
        if len <= 1 {
            return 0.0;
        }
        let sz2 = 2.0 * n - 2.0;
        c = sz2 * ((-c / sz2) as i64 as f64) + c;
        c = if c <= 1.0 - n { c + sz2 } else { -c };
    } else if c > n - 1.0 {
        if len <= 1 {
            return 0.0;
        }
        let sz2 = 2.0 * n - 2.0;
        c -= sz2 * ((c / sz2) as i64 as f64);
        if c >= n {
            c = sz2 - c;
        }
    }
    c
}

const POLE3: f64 = -0.267_949_192_431_122_7;

/// Cubic B-spline prefilter of one line, `mirror` boundary (scipy `apply_filter`).
fn spline_filter_line(c: &mut [f64]) {
    let n = c.len();
    if n <= 1 {
        return;
    }
    let z = POLE3;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    for v in c.iter_mut() {
        *v *= gain;
    }
    // causal init (mirror)
    let z_n_1 = z.powi(n as i32 - 1);
    let mut z_i = z;
    c[0] += z_n_1 * c[n - 1];
    for i in 1..n - 1 {
        c[0] += z_i * (c[i] + z_n_1 * c[n - 1 - i]);
        z_i *= z;
    }
    c[0] /= 1.0 - z_n_1 * z_n_1;
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    // anticausal init (mirror)
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

/// Spline-filter a `[d0, d1, d2]` volume along `axis`.
fn spline_filter_axis(data: &mut [f64], dims: [usize; 3], axis: usize) {
    let len = dims[axis];
    if len <= 1 {
        return;
    }
    let strides = [dims[1] * dims[2], dims[2], 1];
    let st = strides[axis];
    let mut line = vec![0.0; len];
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    for i in 0..dims[others[0]] {
        for j in 0..dims[others[1]] {
            let base = i * strides[others[0]] + j * strides[others[1]];
            for k in 0..len {
                line[k] = data[base + k * st];
            }
            spline_filter_line(&mut line);
            for k in 0..len {
                data[base + k * st] = line[k];
            }
        }
    }
}

/// Cubic weights (`get_spline_interpolation_weights`, order 3).
fn cubic_weights(x: f64) -> [f64; 4] {
    let y = x - x.floor();
    let z = 1.0 - y;
    let w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
    let w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
    let w0 = z * z * z / 6.0;
    let mut w3 = 1.0;
    w3 -= w0;
    w3 -= w1;
    w3 -= w2;
    [w0, w1, w2, w3]
}

/// Taps and weights of one output index along an axis (`NI_ZoomShift`, grid mode).
fn zoom_taps(out_len: usize, in_len: usize) -> Vec<([usize; 4], [f64; 4])> {
    let zoom = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|k| {
            let mut cc = k as f64;
            cc += 0.5;
            cc *= zoom;
            cc -= 0.5;
            let cc = mirror_coord(cc, in_len);
            let start = cc.floor() as i64 - 1;
            let taps = [0, 1, 2, 3].map(|h| mirror_index(start + h, in_len));
            (taps, cubic_weights(cc))
        })
        .collect()
}

/// Gaussian filter along one axis (`ndimage.gaussian_filter`, truncate 4, `mirror`).
fn gaussian_axis(data: &[f64], dims: [usize; 3], axis: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let s2 = sigma * sigma;
    let mut wts: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / s2 * (x * x) as f64).exp())
        .collect();
    let total: f64 = wts.iter().sum();
    wts.iter_mut().for_each(|v| *v /= total);
    let len = dims[axis];
    let strides = [dims[1] * dims[2], dims[2], 1];
    let st = strides[axis];
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let mut out = vec![0.0; data.len()];
    let r = radius as usize;
    for i in 0..dims[others[0]] {
        for j in 0..dims[others[1]] {
            let base = i * strides[others[0]] + j * strides[others[1]];
            let at = |k: i64| data[base + mirror_index(k, len) * st];
            for k in 0..len as i64 {
                // symmetric kernel: centre first, then pairs (as scipy's correlate1d)
                let mut t = at(k) * wts[r];
                for jj in 1..=r as i64 {
                    t += (at(k + jj) + at(k - jj)) * wts[r + jj as usize];
                }
                out[base + k as usize * st] = t;
            }
        }
    }
    out
}

/// `skimage.transform.resize(img, (dh, dw), order=3, anti_aliasing=True,
/// preserve_range=True).astype(np.uint8)` for `uint8` HWC input.
pub fn skimage_resize_u8(
    src: &[u8],
    h: usize,
    w: usize,
    cn: usize,
    dh: usize,
    dw: usize,
) -> Vec<u8> {
    let dims = [h, w, cn];
    let mut data: Vec<f64> = src.iter().map(|&v| v as f64).collect();
    let (lo, hi) = data
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    // Anti-aliasing: sigma = max(0, (factor - 1) / 2) per axis.
    for (axis, (i, o)) in [(h, dh), (w, dw)].into_iter().enumerate() {
        let sigma = ((i as f64 / o as f64) - 1.0) / 2.0;
        if sigma > 1e-15 {
            data = gaussian_axis(&data, dims, axis, sigma);
        }
    }
    for axis in 0..3 {
        spline_filter_axis(&mut data, dims, axis);
    }
    let ty = zoom_taps(dh, h);
    let tx = zoom_taps(dw, w);
    let tc = zoom_taps(cn, cn);
    let mut out = vec![0u8; dh * dw * cn];
    for (oy, (yi, yw)) in ty.iter().enumerate() {
        for (ox, (xi, xw)) in tx.iter().enumerate() {
            for (oc, (ci, cw)) in tc.iter().enumerate() {
                let mut t = 0.0f64;
                for a in 0..4 {
                    for b in 0..4 {
                        let base = (yi[a] * w + xi[b]) * cn;
                        for c in 0..4 {
                            let mut coeff = data[base + ci[c]];
                            coeff *= yw[a];
                            coeff *= xw[b];
                            coeff *= cw[c];
                            t += coeff;
                        }
                    }
                }
                let v = t.clamp(lo, hi);
                out[(oy * dw + ox) * cn + oc] = v as u8;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Pillow's bicubic resize (MedSAM2: `Image.fromarray(u8).convert("RGB").resize((512, 512))`)
// ---------------------------------------------------------------------------------------

/// Pillow's fixed-point precision for 8-bit images (`PRECISION_BITS`).
const PIL_PRECISION: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (`a = -0.5`).
fn pil_bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output index, the
/// first input index and the fixed-point taps.
fn pil_taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| pil_bicubic((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let f = v * f64::from(1u32 << PIL_PRECISION);
                    (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`.
fn pil_clip8(v: i64) -> u8 {
    if v >= 1 << (PIL_PRECISION + 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PIL_PRECISION) as u8
    }
}

/// One 8-bit plane resized by Pillow's BICUBIC filter exactly as `Image.resize` does it: a
/// horizontal pass into 8 bits over the rows the vertical pass needs, then the vertical pass,
/// each in Pillow's fixed-point arithmetic. `h × w` → `oh × ow`.
pub fn pil_bicubic_resize_u8(src: &[u8], h: usize, w: usize, oh: usize, ow: usize) -> Vec<u8> {
    let horizontal = if ow != w {
        let taps = pil_taps(w, ow);
        let mut tmp = vec![0u8; h * ow];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, (x0, k)) in taps.iter().enumerate() {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(1i64 << (PIL_PRECISION - 1), |a, (i, &c)| {
                        a + i64::from(row[x0 + i]) * i64::from(c)
                    });
                tmp[y * ow + x] = pil_clip8(acc);
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    let taps = pil_taps(h, oh);
    let mut out = vec![0u8; oh * ow];
    for (y, (y0, k)) in taps.iter().enumerate() {
        for x in 0..ow {
            let acc = k
                .iter()
                .enumerate()
                .fold(1i64 << (PIL_PRECISION - 1), |a, (i, &c)| {
                    a + i64::from(horizontal[(y0 + i) * ow + x]) * i64::from(c)
                });
            out[y * ow + x] = pil_clip8(acc);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Post-processing
// ---------------------------------------------------------------------------------------

/// `F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)` of one `h × w`
/// plane (PyTorch CPU arithmetic, `f32`).
pub fn bilinear_resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let idx = |o: usize, i: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = i as f32 / o as f32;
        (0..o)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s as usize).min(i - 1);
                let i1 = i0 + usize::from(i0 < i - 1);
                let l1 = s - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let ys = idx(oh, h);
    let xs = idx(ow, w);
    let mut out = vec![0.0f32; oh * ow];
    for (oy, &(y0, y1, hy0, hy1)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, wx0, wx1)) in xs.iter().enumerate() {
            out[oy * ow + ox] = hy0 * (wx0 * src[y0 * w + x0] + wx1 * src[y0 * w + x1])
                + hy1 * (wx0 * src[y1 * w + x0] + wx1 * src[y1 * w + x1]);
        }
    }
    out
}

/// `F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)` on one
/// `h × w` plane (PyTorch's separable triangle filter, its support widened by the scale when
/// shrinking, weights renormalised at the borders): rows first, then columns. SAM 2 shrinks
/// mask prompts with it.
pub fn antialias_resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let xs = antialias_weights(w, ow);
    let ys = antialias_weights(h, oh);
    let mut rows = vec![0.0f32; h * ow];
    for y in 0..h {
        for (ox, (x0, wts)) in xs.iter().enumerate() {
            let line = &src[y * w + x0..];
            rows[y * ow + ox] = wts.iter().zip(line).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0f32; oh * ow];
    for (oy, (y0, wts)) in ys.iter().enumerate() {
        for ox in 0..ow {
            out[oy * ow + ox] = wts
                .iter()
                .enumerate()
                .map(|(k, a)| a * rows[(y0 + k) * ow + ox])
                .sum();
        }
    }
    out
}

/// Per output index: the first input index and the normalised weights (`_compute_weights_aa`).
fn antialias_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut wts: Vec<f32> = (xmin..xmax)
                .map(|j| {
                    let x = (j as f32 - center + 0.5) * invscale;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let total: f32 = wts.iter().sum();
            if total != 0.0 {
                wts.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, wts)
        })
        .collect()
}

/// Logistic sigmoid in `f32`, as `torch.sigmoid`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Crop the top-left `ch × cw` of an `h × w` plane.
pub fn crop(src: &[f32], w: usize, ch: usize, cw: usize) -> Vec<f32> {
    (0..ch)
        .flat_map(|y| src[y * w..y * w + cw].iter().copied())
        .collect()
}
