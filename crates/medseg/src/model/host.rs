//! medseg's CPU kernels, on plain `f32` slices: the [`super::kernels::Kernels::Host`] path.
//! Each replaces a Burn flex operation that was a large share of the CPU time (single-threaded,
//! scalar, or a strided copy), and each is checked against Burn's result by the parity tests:
//!
//! * [`gelu`], [`add_gelu`], [`add`]: exact-form GELU (`erf` as Abramowitz & Stegun 7.1.26,
//!   |error| ≤ 1.5e-7, the approximation PyTorch's own vectorised CPU GELU uses, with a
//!   Cephes-style `exp`), fused with the residual add before it; in place, on all cores.
//! * [`layer_norm_channels`]: SAM's `LayerNorm2d` over the channels of `[B, C, H, W]`, in place.
//! * [`depthwise3x3`]: TinyViT's depthwise 3×3 convolutions (stride 1 or 2, padding 1).
//! * [`transpose`]: tiled, parallel `[B, R, C]` → `[B, C, R]`.
//! * [`pixel_shuffle2_bias`]: the shuffle + bias after the matmul that replaces a 2×2
//!   stride-2 transposed convolution.
//! * [`softmax_rows`], [`rope`]: the memory attention's softmax over 7 000+ keys and its
//!   rotary encoding, in place (Burn's took a fifth of MedSAM2's memory attention).
//!
//! The elementwise loops are compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked
//! at run time (`multiversion!`).

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to share.
const CHUNK: usize = 1 << 15;

/// `e^x` for `x ≤ 0` (Cephes `expf`: range reduction by ln 2, degree-6 polynomial; ≈ 1 ulp).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_nonpositive(-a * a);
    y.copysign(x)
}

/// `x · Φ(x)`, exact-form GELU (PyTorch's `nn.GELU()` default).
#[inline(always)]
fn gelu1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Compile `body` for AVX-512, AVX2+FMA and baseline x86-64 and pick one at run time.
macro_rules! multiversion {
    ($vis:vis $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

multiversion!(gelu_chunk(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu1(*v);
    }
});

multiversion!(add_gelu_chunk(x: &mut [f32], y: &[f32]) {
    for (v, &w) in x.iter_mut().zip(y) {
        *v = gelu1(*v + w);
    }
});

multiversion!(add_chunk(x: &mut [f32], y: &[f32]) {
    for (v, &w) in x.iter_mut().zip(y) {
        *v += w;
    }
});

multiversion!(softmax_row_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
});

/// Softmax of one row in place: on AVX-512 with a vectorised `exp` (within 1e-6 relative of
/// the exact softmax, 1e-9 absolute for probabilities far below the row's maximum), elsewhere
/// `f32::exp` one element at a time.
pub(super) fn softmax_row(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F, all `avx512::softmax_row` needs.
        return unsafe { avx512::softmax_row(x) };
    }
    softmax_row_scalar(x)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `exp` of 16 lanes: `2^t` for `t = x·log2(e)` (clamped at −150, where it is 0), split
    /// into `n + f` with `|f| ≤ ½`, `2^f` by its degree-6 Taylor polynomial (relative error
    /// ≤ 1.2e-7), scaled by `2^n` with `vscalefps`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        const C: [f32; 7] = [
            1.0,
            std::f32::consts::LN_2,
            0.240_226_5,
            0.055_504_11,
            0.009_618_129,
            0.001_333_355_8,
            0.000_154_035_3,
        ];
        let t = _mm512_max_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            _mm512_set1_ps(-150.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, n);
        let mut p = _mm512_set1_ps(C[6]);
        for c in C[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// Softmax of `x` in place: max, `exp(x − max)` and their sum, scale by `1 / sum`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_row(x: &mut [f32]) {
        let (body, tail) = x.split_at_mut(x.len() / 16 * 16);
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in body.chunks_exact(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(c.as_ptr()));
        }
        let max = tail.iter().fold(_mm512_reduce_max_ps(m), |a, &b| a.max(b));
        let (vmax, mut sum) = (_mm512_set1_ps(max), _mm512_setzero_ps());
        for c in body.chunks_exact_mut(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), vmax));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm512_add_ps(sum, e);
        }
        let mut total = _mm512_reduce_add_ps(sum);
        for v in tail.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        let inv = 1.0 / total;
        let vinv = _mm512_set1_ps(inv);
        for c in body.chunks_exact_mut(16) {
            _mm512_storeu_ps(
                c.as_mut_ptr(),
                _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), vinv),
            );
        }
        tail.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Softmax over each `row`-long row of `x`, in place (rows in parallel).
pub fn softmax_rows(x: &mut [f32], row: usize) {
    x.par_chunks_mut(row.max(1)).for_each(softmax_row);
}

multiversion!(rope_row(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((p, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (p[0], p[1]);
        p[0] = a * c - b * s;
        p[1] = a * s + b * c;
    }
});

/// Rotary encoding in place on the first `rows` rows (each `d` wide, pairs `(2k, 2k+1)`) of
/// `x`: row `i` turned by the angles of table row `i mod (cos.len() / (d / 2))`.
pub fn rope(x: &mut [f32], d: usize, rows: usize, cos: &[f32], sin: &[f32]) {
    let half = d / 2;
    let grid = cos.len() / half;
    x[..rows * d]
        .par_chunks_mut(d * 64)
        .enumerate()
        .for_each(|(chunk, block)| {
            for (j, row) in block.chunks_exact_mut(d).enumerate() {
                let t = (chunk * 64 + j) % grid;
                rope_row(
                    row,
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
            }
        });
}

/// `x ← gelu(x)`.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(gelu_chunk);
}

/// `x ← gelu(x + y)`.
pub fn add_gelu(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    x.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(a, b)| add_gelu_chunk(a, b));
}

/// `x ← x + y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    x.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(a, b)| add_chunk(a, b));
}

/// `LayerNorm2d` in place: `x` is `[B, C, HW]`; each pixel is normalised over its `C` channels
/// (mean, then the mean of squared deviations, as SAM's `LayerNorm2d`), then scaled and shifted
/// per channel. Batches run in parallel; within one, the channel loops vectorise over pixels.
pub fn layer_norm_channels(x: &mut [f32], c: usize, hw: usize, w: &[f32], b: &[f32], eps: f32) {
    assert!(c > 0 && x.len().is_multiple_of(c * hw) && w.len() == c && b.len() == c);
    // Split the pixels into tiles so that one batch of a large map also uses every core.
    let tile = hw.clamp(1, 4096);
    let tiles_per_batch = hw.div_ceil(tile);
    let batches = x.len() / (c * hw);
    let x_ptr = SyncPtr(x.as_mut_ptr());
    (0..batches * tiles_per_batch)
        .into_par_iter()
        .for_each(|job| {
            let (bi, ti) = (job / tiles_per_batch, job % tiles_per_batch);
            let p0 = ti * tile;
            let n = tile.min(hw - p0);
            // SAFETY: each job touches the pixels [p0, p0 + n) of batch `bi` in every channel:
            // disjoint between jobs, and inside `x` by the assert above.
            unsafe { layer_norm_tile(x_ptr.get().add(bi * c * hw + p0), hw, c, n, w, b, eps) };
        });
}

/// A raw pointer handed to rayon jobs that write disjoint ranges of one buffer.
struct SyncPtr(*mut f32);
// SAFETY: the jobs that share it write disjoint ranges (see `layer_norm_channels`).
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// # Safety
/// `base + ch * stride + [0, n)` must be valid, exclusively owned memory for every `ch < c`.
unsafe fn layer_norm_tile(
    base: *mut f32,
    stride: usize,
    c: usize,
    n: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    let plane = |ch: usize| unsafe { std::slice::from_raw_parts_mut(base.add(ch * stride), n) };
    let mut mean = vec![0.0f32; n];
    for ch in 0..c {
        acc_chunk(&mut mean, plane(ch));
    }
    let inv_c = 1.0 / c as f32;
    mean.iter_mut().for_each(|m| *m *= inv_c);
    let mut var = vec![0.0f32; n];
    for ch in 0..c {
        acc_sq_dev_chunk(&mut var, plane(ch), &mean);
    }
    let rstd: Vec<f32> = var.iter().map(|v| 1.0 / (v * inv_c + eps).sqrt()).collect();
    for ch in 0..c {
        norm_chunk(plane(ch), &mean, &rstd, w[ch], b[ch]);
    }
}

multiversion!(acc_chunk(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
});

multiversion!(acc_sq_dev_chunk(acc: &mut [f32], x: &[f32], mean: &[f32]) {
    for ((a, &v), &m) in acc.iter_mut().zip(x).zip(mean) {
        let d = v - m;
        *a += d * d;
    }
});

multiversion!(norm_chunk(x: &mut [f32], mean: &[f32], rstd: &[f32], w: f32, b: f32) {
    for ((v, &m), &r) in x.iter_mut().zip(mean).zip(rstd) {
        *v = (*v - m) * r * w + b;
    }
});

/// Depthwise 3×3 convolution with padding 1 and stride 1 or 2, plus bias: `src` holds
/// `planes` (batch × channel) maps of `h × w`; channel `p % c` of each plane uses the 9 taps
/// `weight[9·ch..]` and `bias[ch]`. Planes run in parallel; with stride 1 the inner loops run
/// along rows and vectorise.
#[allow(clippy::too_many_arguments)]
pub fn depthwise3x3(
    src: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    stride: usize,
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, usize, usize) {
    let c = bias.len();
    assert!(src.len() == planes * h * w && weight.len() == 9 * c && planes.is_multiple_of(c));
    assert!(stride == 1 || stride == 2);
    let (ho, wo) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
    let mut out = vec![0.0f32; planes * ho * wo];
    out.par_chunks_mut(ho * wo)
        .zip(src.par_chunks(h * w))
        .enumerate()
        .for_each(|(p, (o, s))| {
            let ch = p % c;
            dw_plane(
                o,
                s,
                h,
                w,
                ho,
                wo,
                stride,
                &weight[9 * ch..9 * ch + 9],
                bias[ch],
            );
        });
    (out, ho, wo)
}

multiversion!(dw_plane(o: &mut [f32], s: &[f32], h: usize, w: usize, ho: usize, wo: usize, stride: usize, k: &[f32], b: f32) {
    for oy in 0..ho {
        let orow = &mut o[oy * wo..(oy + 1) * wo];
        orow.fill(b);
        for i in 0..3 {
            let iy = (oy * stride + i) as isize - 1;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let irow = &s[iy as usize * w..(iy as usize + 1) * w];
            for j in 0..3 {
                let kv = k[i * 3 + j];
                if stride == 1 {
                    // ox + j - 1 inside [0, w)
                    let lo = 1usize.saturating_sub(j);
                    let hi = (w + 1 - j).min(wo);
                    let src = &irow[lo + j - 1..hi + j - 1];
                    for (ov, &iv) in orow[lo..hi].iter_mut().zip(src) {
                        *ov += kv * iv;
                    }
                } else {
                    for (ox, ov) in orow.iter_mut().enumerate() {
                        let ix = (ox * stride + j) as isize - 1;
                        if ix >= 0 && ix < w as isize {
                            *ov += kv * irow[ix as usize];
                        }
                    }
                }
            }
        }
    }
});

/// `[B, R, C]` → `[B, C, R]` (row-major), in cache-sized tiles, batches and tile rows in
/// parallel.
pub fn transpose(src: &[f32], batches: usize, rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    let plane = rows * cols;
    assert_eq!(src.len(), batches * plane);
    let mut out = vec![0.0f32; src.len()];
    if plane == 0 {
        return out;
    }
    // One job per (batch, band of T output rows = T source columns).
    let bands = cols.div_ceil(T);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    (0..batches * bands).into_par_iter().for_each(|job| {
        let (bi, band) = (job / bands, job % bands);
        let (c0, c1) = (band * T, ((band + 1) * T).min(cols));
        let s = &src[bi * plane..(bi + 1) * plane];
        for r0 in (0..rows).step_by(T) {
            let r1 = (r0 + T).min(rows);
            for c in c0..c1 {
                // SAFETY: output row `c` of batch `bi` belongs to this job's band only.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(bi * plane + c * rows), rows)
                };
                for r in r0..r1 {
                    o[r] = s[r * cols + c];
                }
            }
        }
    });
    out
}

/// The pixel shuffle of a 2×2 stride-2 transposed convolution, plus its bias: `src` holds
/// `planes` blocks of `[2, 2, H, W]` (the `(i, j)` kernel taps of one output channel) and the
/// result `planes` blocks of `[2H, 2W]` with `out[2y + i, 2x + j] = src[i, j, y, x] + bias`.
/// `bias` has one value per output channel and repeats over the batch.
pub fn pixel_shuffle2_bias(
    src: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    bias: &[f32],
) -> Vec<f32> {
    let plane = 4 * h * w;
    assert!(src.len() == planes * plane && !bias.is_empty() && planes.is_multiple_of(bias.len()));
    let mut out = vec![0.0f32; planes * plane];
    out.par_chunks_mut(plane)
        .zip(src.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (o, s))| {
            let bv = bias[p % bias.len()];
            for i in 0..2 {
                for y in 0..h {
                    let row = &mut o[(2 * y + i) * 2 * w..(2 * y + i + 1) * 2 * w];
                    let s0 = &s[((2 * i) * h + y) * w..][..w];
                    let s1 = &s[((2 * i + 1) * h + y) * w..][..w];
                    for (x, pair) in row.chunks_exact_mut(2).enumerate() {
                        pair[0] = s0[x] + bv;
                        pair[1] = s1[x] + bv;
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_the_erf_form() {
        // Reference: libm's f64 erf.
        let mut max_err = 0.0f64;
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.0025)
            .chain([-30.0, -10.0, 10.0, 30.0, 1e-30, -1e-30, 0.0])
            .collect();
        let mut ys = xs.clone();
        gelu(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x64 = x as f64;
            let want = 0.5 * x64 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2));
            max_err = max_err.max((y as f64 - want).abs());
        }
        assert!(max_err < 5e-7, "max |gelu - exact| = {max_err}");
    }

    #[test]
    fn exp_is_accurate_on_its_range() {
        for i in 0..=8700 {
            let x = -(i as f32) * 0.01;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            assert!(
                (got - want).abs() <= 2.5e-7 * want + 1e-38,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn layer_norm_channels_matches_the_formula() {
        let (bsz, c, hw) = (2, 5, 4099); // several pixel tiles, a ragged last one
        let x: Vec<f32> = (0..bsz * c * hw)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 3.0)
            .collect();
        let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 - 2.0).collect();
        let mut y = x.clone();
        layer_norm_channels(&mut y, c, hw, &w, &b, 1e-6);
        for bi in 0..bsz {
            for p in (0..hw).step_by(97) {
                let at = |ch: usize| x[(bi * c + ch) * hw + p] as f64;
                let m = (0..c).map(at).sum::<f64>() / c as f64;
                let v = (0..c).map(|ch| (at(ch) - m).powi(2)).sum::<f64>() / c as f64;
                for ch in 0..c {
                    let want = (at(ch) - m) / (v + 1e-6).sqrt() * w[ch] as f64 + b[ch] as f64;
                    let got = y[(bi * c + ch) * hw + p] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose_swaps_the_last_two_dims() {
        for (b, r, c) in [(1, 1, 1), (2, 33, 70), (3, 64, 5), (1, 100, 257)] {
            let src: Vec<f32> = (0..b * r * c).map(|v| v as f32).collect();
            let out = transpose(&src, b, r, c);
            for bi in 0..b {
                for i in 0..r {
                    for j in 0..c {
                        assert_eq!(out[bi * r * c + j * r + i], src[bi * r * c + i * c + j]);
                    }
                }
            }
        }
    }

    #[test]
    fn depthwise_matches_direct_convolution() {
        for (planes, c, h, w, stride) in [
            (6, 3, 7, 9, 1),
            (4, 2, 8, 5, 2),
            (2, 2, 1, 1, 1),
            (3, 3, 9, 10, 2),
        ] {
            let src: Vec<f32> = (0..planes * h * w)
                .map(|v| ((v * 37) % 11) as f32 - 5.0)
                .collect();
            let wt: Vec<f32> = (0..9 * c).map(|v| (v % 7) as f32 * 0.25 - 0.5).collect();
            let bias: Vec<f32> = (0..c).map(|v| v as f32).collect();
            let (out, ho, wo) = depthwise3x3(&src, planes, h, w, stride, &wt, &bias);
            for p in 0..planes {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut want = bias[p % c];
                        for i in 0..3 {
                            for j in 0..3 {
                                let (iy, ix) = (
                                    (oy * stride + i) as isize - 1,
                                    (ox * stride + j) as isize - 1,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    want += wt[9 * (p % c) + i * 3 + j]
                                        * src[p * h * w + iy as usize * w + ix as usize];
                                }
                            }
                        }
                        assert_eq!(
                            out[p * ho * wo + oy * wo + ox],
                            want,
                            "{planes} {h}x{w} s{stride}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pixel_shuffle_places_every_tap() {
        let (planes, h, w) = (6, 3, 5); // 2 batches × 3 channels
        let src: Vec<f32> = (0..planes * 4 * h * w).map(|v| v as f32).collect();
        let bias = [0.5f32, 1.5, 2.5];
        let out = pixel_shuffle2_bias(&src, planes, h, w, &bias);
        for p in 0..planes {
            for i in 0..2 {
                for j in 0..2 {
                    for y in 0..h {
                        for x in 0..w {
                            let s = src[p * 4 * h * w + ((i * 2 + j) * h + y) * w + x];
                            let o = out[p * 4 * h * w + (2 * y + i) * 2 * w + 2 * x + j];
                            assert_eq!(o, s + bias[p % 3]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_add_gelu_and_add() {
        let x: Vec<f32> = (0..100_000)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let y: Vec<f32> = (0..100_000).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut a = x.clone();
        add_gelu(&mut a, &y);
        let mut b: Vec<f32> = x.iter().zip(&y).map(|(p, q)| p + q).collect();
        gelu(&mut b);
        assert_eq!(a, b);
        let mut c = x.clone();
        add(&mut c, &y);
        assert!(c
            .iter()
            .zip(x.iter().zip(&y))
            .all(|(s, (p, q))| *s == p + q));
    }

    /// The softmax (vectorised on AVX-512, `f32::exp` elsewhere) equals the exact one to 1e-6 relative (1e-9 absolute for the
    /// tiny probabilities far below the row's maximum, where `x·log2(e)`'s rounding shows),
    /// rows of any length, large and very negative scores included.
    #[test]
    fn softmax_row_matches_f32_exp() {
        for len in [1, 15, 16, 37, 4096] {
            let values = crate::model::bf16::tests::values(len, len as u32);
            let mut x: Vec<f32> = values.iter().map(|v| 40.0 * v).collect();
            if len > 2 {
                x[1] = -1e30;
            }
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = x.iter().map(|v| ((v - max) as f64).exp()).collect();
            let sum: f64 = e.iter().sum();
            softmax_row(&mut x);
            for (g, e) in x.iter().zip(&e) {
                let want = e / sum;
                assert!(
                    (*g as f64 - want).abs() <= 1e-6 * want + 1e-9,
                    "len {len}: {g} vs {want}"
                );
            }
        }
    }
}
