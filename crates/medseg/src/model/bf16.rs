//! `Precision::Bf16`'s matrix product on the CPU: `C = A · B + bias` with `A` (activations) and
//! `B` (a layer's weights, packed once at load) rounded to bfloat16 and every product summed
//! in `f32` — the AVX-512 BF16 instruction `vdpbf16ps`, which does two bf16 multiply-adds per
//! `f32` lane, twice the work of an `f32` FMA per instruction.
//!
//! The weights are packed in panels of [`NR`] output columns, each a run of `k/2` pairs
//! `(B[2j][n], B[2j+1][n])` so that one 32-bit lane holds the two values `vdpbf16ps` multiplies
//! with the broadcast pair `(A[m][2j], A[m][2j+1])`. Rows of `A` go through [`MR`] at a time
//! (24 accumulators in registers), converted to bf16 per chunk of rows, chunks in parallel.
//!
//! [`matmul_reference`] is the same arithmetic one element at a time (inputs rounded to
//! nearest-even bf16, `f32` sums): the tests hold the vector kernel to it, and it is what runs
//! where the CPU has no AVX-512 BF16 (only the tests call it there: `Precision::Bf16` falls back
//! to `f32` on such a CPU, see `crate::Precision`).

use half::bf16;
use rayon::prelude::*;

/// Output columns per packed panel (two 16-lane registers).
pub const NR: usize = 32;
/// Rows of `A` per register tile.
pub const MR: usize = 12;
/// Rows of `A` per parallel task (converted to bf16 together, kept in cache across panels).
const ROWS_PER_TASK: usize = MR * 8;

/// Whether this CPU runs the bf16 kernel (AVX-512 F + BF16), detected at run time.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix `B` `[k, n]` rounded to bf16 and packed for the kernel.
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    /// `ceil(n / NR)` panels × `ceil(k / 2)` pairs × `NR` lanes; each lane two bf16 (low: even
    /// `k`, high: odd `k`), zero past `k` and `n`.
    panels: Vec<u32>,
}

impl PackedB {
    /// Pack row-major `b` `[k, n]`.
    pub fn new(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            b.len(),
            k * n,
            "PackedB::new: {} values for [{k}, {n}]",
            b.len()
        );
        Self::from_fn(k, n, |r, c| b[r * n + c])
    }

    /// Pack the `[k, n]` matrix whose element `(r, c)` is `at(r, c)`.
    pub fn from_fn(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let pairs = k.div_ceil(2);
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0u32; n_panels * pairs * NR];
        let bits = |r: usize, c: usize| {
            if r < k {
                to_bf16_bits(at(r, c)) as u32
            } else {
                0
            }
        };
        for (p, panel) in panels.chunks_mut(pairs * NR).enumerate() {
            for (j, lanes) in panel.chunks_mut(NR).enumerate() {
                for (lane, v) in lanes.iter_mut().enumerate() {
                    let c = p * NR + lane;
                    if c < n {
                        *v = bits(2 * j, c) | bits(2 * j + 1, c) << 16;
                    }
                }
            }
        }
        Self { k, n, panels }
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// Round to the nearest bf16, ties to even (NaN stays NaN).
fn to_bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// `a` `[m, k]` · `b` + `bias` → `[m, n]`, on the AVX-512 BF16 kernel, rows in parallel.
///
/// # Panics
/// If the CPU lacks AVX-512 BF16 ([`supported`]) or `a`/`bias` do not fit `b`: callers check
/// both (the layer that owns `b` is only built with it on a CPU that has the kernel).
pub fn matmul(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>) -> Vec<f32> {
    matmul_with(a, m, b, bias, true)
}

/// [`matmul`], its row blocks in parallel or (inside a parallel loop) one after the other.
fn matmul_with(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>, par: bool) -> Vec<f32> {
    let mut c = vec![0.0f32; m * b.n];
    matmul_into(a, m, b, bias, par, &mut c);
    c
}

/// [`matmul_with`] into `c` `[m, n]` (every element written).
fn matmul_into(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>, par: bool, c: &mut [f32]) {
    assert!(supported(), "bf16::matmul needs AVX-512 BF16");
    check_shapes(a, m, b, bias);
    assert_eq!(
        c.len(),
        m * b.n,
        "bf16 matmul: output of {} for [{m}, {}]",
        c.len(),
        b.n
    );
    if m == 0 || b.n == 0 {
        return;
    }
    let task = |(t, c_rows): (usize, &mut [f32])| {
        let rows = c_rows.len() / b.n;
        let a_rows = &a[t * ROWS_PER_TASK * b.k..][..rows * b.k];
        // SAFETY: `supported()` was checked above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::rows(a_rows, rows, b, bias, c_rows)
        }
    };
    let chunk = ROWS_PER_TASK * b.n;
    if par {
        c.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        c.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// SAM's decomposed relative-position bias for [`attention`]: the query at row `i` gets
/// `h[i, ky] + w[i, kx]` added to its score with the key at `(ky, kx)` (key `ky · kw + kx`).
#[derive(Debug, Clone, Copy)]
pub struct RelPos<'a> {
    /// `[heads, n, kh]`.
    pub h: &'a [f32],
    /// `[heads, n, kw]`.
    pub w: &'a [f32],
    /// Key grid rows.
    pub kh: usize,
    /// Key grid columns.
    pub kw: usize,
}

/// The shape of an [`attention`] call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Independent heads (batch × heads, or windows × heads).
    pub heads: usize,
    /// Queries per head.
    pub queries: usize,
    /// Keys (and values) per head.
    pub keys: usize,
    /// Width of a query and a key.
    pub d: usize,
    /// Width of a value.
    pub dv: usize,
}

/// `softmax(q · kᵀ + bias) · v` for independent heads: `q` `[heads, queries, d]` (already
/// scaled), `k` `[heads, keys, d]`, `v` `[heads, keys, dv]` → `[heads, queries, dv]`. Both
/// products on the bf16 kernel; the scores, the bias and the softmax in `f32`. Many small
/// heads (windows) run in parallel, a few large ones one after the other with their rows in
/// parallel.
///
/// # Panics
/// As [`matmul`]; and if `rel` does not cover the keys and queries.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: Heads, rel: Option<RelPos>) -> Vec<f32> {
    let (nq, nk) = (s.queries, s.keys);
    if let Some(r) = rel {
        assert_eq!(
            r.kh * r.kw,
            nk,
            "relative position grid {}x{} for {nk} keys",
            r.kh,
            r.kw
        );
        assert_eq!(
            r.h.len(),
            s.heads * nq * r.kh,
            "relative position rows for {nq} queries"
        );
        assert_eq!(
            r.w.len(),
            s.heads * nq * r.kw,
            "relative position columns for {nq} queries"
        );
    }
    fn part(x: &[f32], head: usize, rows: usize, width: usize) -> &[f32] {
        &x[head * rows * width..][..rows * width]
    }
    let mut out = vec![0.0f32; s.heads * nq * s.dv];
    let one = |h: usize, par: bool, scores: &mut [f32], out: &mut [f32]| {
        let rel = rel.map(|r| (part(r.h, h, nq, r.kh), part(r.w, h, nq, r.kw), r.kw));
        let qkv = (
            part(q, h, nq, s.d),
            part(k, h, nk, s.d),
            part(v, h, nk, s.dv),
        );
        head(qkv, s, rel, par, scores, out)
    };
    if s.heads >= 2 * rayon::current_num_threads() {
        out.par_chunks_mut(nq * s.dv)
            .enumerate()
            .for_each(|(h, out)| one(h, false, &mut vec![0.0; nq * nk], out));
    } else {
        let mut scores = vec![0.0; nq * nk];
        for (h, out) in out.chunks_mut(nq * s.dv).enumerate() {
            one(h, true, &mut scores, out);
        }
    }
    out
}

/// One head of [`attention`] into `out` `[queries, dv]`, with `scores` `[queries, keys]` as
/// scratch.
fn head(
    (q, k, v): (&[f32], &[f32], &[f32]),
    s: Heads,
    rel: Option<(&[f32], &[f32], usize)>,
    par: bool,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (nq, nk, d) = (s.queries, s.keys, s.d);
    let kt = PackedB::from_fn(d, nk, |r, c| k[c * d + r]);
    matmul_into(q, nq, &kt, None, par, scores);
    let row = |(i, s): (usize, &mut [f32])| {
        if let Some((rh, rw, kw)) = rel {
            let (bh, bw) = (&rh[i * (nk / kw)..][..nk / kw], &rw[i * kw..][..kw]);
            for (s, h) in s.chunks_mut(kw).zip(bh) {
                for (s, w) in s.iter_mut().zip(bw) {
                    *s += h + w;
                }
            }
        }
        softmax_row(s);
    };
    if par {
        scores.par_chunks_mut(nk).enumerate().for_each(row);
    } else {
        scores.chunks_mut(nk).enumerate().for_each(row);
    }
    matmul_into(scores, nq, &PackedB::new(v, nk, s.dv), None, par, out);
}

/// Softmax of one row in place, with a vectorised `exp` (≤ 2 ulp from `f32::exp`; the
/// probabilities go on to be rounded to bf16).
fn softmax_row(x: &mut [f32]) {
    // SAFETY: only reached from `attention`, after `supported()` (AVX-512 F + BF16).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx512::softmax_row(x)
    }
}

/// The same product one element at a time: inputs rounded to bf16, products summed in `f32`
/// in the kernel's order (pairs, then `k` ascending).
pub fn matmul_reference(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>) -> Vec<f32> {
    check_shapes(a, m, b, bias);
    let (k, n, pairs) = (b.k, b.n, b.k.div_ceil(2));
    let round = |x: f32| bf16::from_bits(to_bf16_bits(x)).to_f32();
    let mut c = vec![0.0f32; m * n];
    for (i, row) in c.chunks_mut(n.max(1)).enumerate().take(m) {
        for (col, out) in row.iter_mut().enumerate() {
            let lanes = &b.panels[(col / NR) * pairs * NR..];
            let mut acc = 0.0f32;
            for j in 0..pairs {
                let w = lanes[j * NR + col % NR];
                let lo = bf16::from_bits(w as u16).to_f32();
                let hi = bf16::from_bits((w >> 16) as u16).to_f32();
                let a0 = round(a[i * k + 2 * j]);
                let a1 = if 2 * j + 1 < k {
                    round(a[i * k + 2 * j + 1])
                } else {
                    0.0
                };
                acc += a0 * lo + a1 * hi;
            }
            *out = acc + bias.map_or(0.0, |bias| bias[col]);
        }
    }
    c
}

fn check_shapes(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>) {
    assert_eq!(
        a.len(),
        m * b.k,
        "bf16 matmul: A has {} values, not [{m}, {}]",
        a.len(),
        b.k
    );
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            b.n,
            "bf16 matmul: bias of {} for {} columns",
            bias.len(),
            b.n
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedB, MR, NR};
    use std::arch::x86_64::*;

    /// `c` `[rows, n]` = `a` `[rows, k]` · `b` + bias, for one task's rows.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn rows(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &mut [f32]) {
        let pairs = b.k.div_ceil(2);
        let tiles = rows.div_ceil(MR);
        // A in bf16, `pairs` u32 per row, zero rows up to a whole number of tiles.
        let mut a16 = vec![0u32; tiles * MR * pairs];
        for (r, dst) in a16.chunks_mut(pairs).take(rows).enumerate() {
            convert_row(&a[r * b.k..][..b.k], dst);
        }
        let mut tile = [0.0f32; MR * NR];
        for (p, panel) in b.panels.chunks(pairs * NR).enumerate() {
            for t in 0..tiles {
                kernel(
                    &a16[t * MR * pairs..][..MR * pairs],
                    panel,
                    pairs,
                    &mut tile,
                );
                store(&tile, t * MR, rows, p * NR, b.n, bias, c);
            }
        }
    }

    /// One row of `f32` → bf16 pairs (round to nearest even), 32 values per step.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn convert_row(src: &[f32], dst: &mut [u32]) {
        let k = src.len();
        let mut i = 0;
        while i + 32 <= k {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(i / 2).cast(), packed);
            i += 32;
        }
        while i < k {
            let lo = super::to_bf16_bits(src[i]) as u32;
            let hi = if i + 1 < k {
                super::to_bf16_bits(src[i + 1]) as u32
            } else {
                0
            };
            dst[i / 2] = lo | hi << 16;
            i += 2;
        }
    }

    /// `tile` `[MR, NR]` = MR rows of `a16` · one panel, in registers.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel(a16: &[u32], panel: &[u32], pairs: usize, tile: &mut [f32; MR * NR]) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let a = a16.as_ptr();
        let mut bp = panel.as_ptr();
        for j in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = *a.add(r * pairs + j) as i32;
                let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], ar, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], ar, b1);
            }
            bp = bp.add(NR);
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), acc[1]);
        }
    }

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

    /// Copy the tile's rows `< rows` and columns `< n` into `c`, adding the bias.
    fn store(
        tile: &[f32; MR * NR],
        row0: usize,
        rows: usize,
        col0: usize,
        n: usize,
        bias: Option<&[f32]>,
        c: &mut [f32],
    ) {
        let cols = NR.min(n - col0);
        for r in 0..MR.min(rows - row0) {
            let out = &mut c[(row0 + r) * n + col0..][..cols];
            let src = &tile[r * NR..][..cols];
            match bias {
                Some(bias) => {
                    for ((o, s), b) in out.iter_mut().zip(src).zip(&bias[col0..]) {
                        *o = s + b;
                    }
                }
                None => out.copy_from_slice(src),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn f32_matmul(a: &[f32], m: usize, b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        c
    }

    /// The reference is a bf16 product: within bf16's rounding of the exact `f32` one, and not
    /// equal to it (so the rounding really happens).
    #[test]
    fn reference_rounds_inputs_to_bf16_and_sums_in_f32() {
        let (m, k, n) = (5, 37, 40);
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let got = matmul_reference(&a, m, &PackedB::new(&b, k, n), None);
        let exact = f32_matmul(&a, m, &b, k, n);
        let worst = got
            .iter()
            .zip(&exact)
            .map(|(g, e)| (g - e).abs())
            .fold(0.0, f32::max);
        // Each input is off by ≤ 2^-9 relatively: |Δ| ≤ 2·2^-9·Σ|a||b| ≤ 2^-8·k.
        assert!(worst < k as f32 / 256.0, "max |Δ| {worst}");
        assert!(worst > 1e-4, "no bf16 rounding seen (max |Δ| {worst})");
        let bits = to_bf16_bits(1.0 + 3.0 / 512.0); // halfway between two bf16: ties to even
        assert_eq!(bf16::from_bits(bits).to_f32(), 1.0 + 4.0 / 512.0);
    }

    /// On a CPU with AVX-512 BF16 the vector kernel equals the reference (the same products;
    /// sums in another order within f32 rounding), tails of every size included. Elsewhere the
    /// kernel must say it is not there.
    #[test]
    fn vector_kernel_matches_the_reference() {
        if !supported() {
            let caught = std::panic::catch_unwind(|| {
                matmul(&[0.0; 4], 2, &PackedB::new(&[0.0; 4], 2, 2), None)
            });
            assert!(caught.is_err(), "matmul ran without AVX-512 BF16");
            return;
        }
        for &(m, k, n) in &[
            (1, 2, 1),
            (13, 64, 32),
            (97, 33, 45),
            (200, 768, 70),
            (7, 3, 100),
        ] {
            let (a, b, bias) = (values(m * k, 3), values(k * n, 4), values(n, 5));
            let packed = PackedB::new(&b, k, n);
            let got = matmul(&a, m, &packed, Some(&bias));
            let want = matmul_reference(&a, m, &packed, Some(&bias));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + w.abs()),
                    "[{m}x{k}x{n}] element {i}: {g} vs {w}"
                );
            }
        }
    }

    /// `softmax(q·kᵀ + bias)·v` in `f32`, one element at a time.
    fn f32_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: Heads,
        bias: impl Fn(usize, usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut out = vec![0.0; s.heads * s.queries * s.dv];
        for h in 0..s.heads {
            for i in 0..s.queries {
                let qi = &q[(h * s.queries + i) * s.d..][..s.d];
                let mut p: Vec<f32> = (0..s.keys)
                    .map(|j| {
                        let kj = &k[(h * s.keys + j) * s.d..][..s.d];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() + bias(h, i, j)
                    })
                    .collect();
                let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                p.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f32 = p.iter().sum();
                for c in 0..s.dv {
                    let o = (0..s.keys)
                        .map(|j| p[j] / sum * v[(h * s.keys + j) * s.dv + c])
                        .sum();
                    out[(h * s.queries + i) * s.dv + c] = o;
                }
            }
        }
        out
    }

    /// bf16 attention with SAM's relative-position bias, few large heads (rows in parallel)
    /// and many small ones (heads in parallel), against the `f32` function: within bf16's
    /// rounding, and the bias really applied (without it the outputs move far more).
    #[test]
    fn attention_with_relative_positions_matches_f32_within_bf16_rounding() {
        if !supported() {
            let s = Heads {
                heads: 1,
                queries: 1,
                keys: 1,
                d: 2,
                dv: 2,
            };
            let caught =
                std::panic::catch_unwind(|| attention(&[0.0; 2], &[0.0; 2], &[0.0; 2], s, None));
            assert!(caught.is_err(), "attention ran without AVX-512 BF16");
            return;
        }
        for heads in [2, 16] {
            let (kh, kw, nq, d, dv) = (5, 7, 35, 24, 16);
            let s = Heads {
                heads,
                queries: nq,
                keys: kh * kw,
                d,
                dv,
            };
            let q = values(heads * nq * d, 6);
            let k = values(heads * s.keys * d, 7);
            let v = values(heads * s.keys * dv, 8);
            let rh: Vec<f32> = values(heads * nq * kh, 9).iter().map(|x| 3.0 * x).collect();
            let rw: Vec<f32> = values(heads * nq * kw, 10)
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let rel = RelPos {
                h: &rh,
                w: &rw,
                kh,
                kw,
            };
            let got = attention(&q, &k, &v, s, Some(rel));
            let bias = |h: usize, i: usize, j: usize| {
                rh[(h * nq + i) * kh + j / kw] + rw[(h * nq + i) * kw + j % kw]
            };
            let want = f32_attention(&q, &k, &v, s, bias);
            let plain = f32_attention(&q, &k, &v, s, |_, _, _| 0.0);
            let worst = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            };
            let (err, bias_effect) = (worst(&got, &want), worst(&plain, &want));
            assert!(err < 2e-2, "{heads} heads: max |Δ| {err} from f32");
            assert!(
                bias_effect > 20.0 * err,
                "{heads} heads: bias moves {bias_effect}, error {err}"
            );
        }
    }

    /// The vectorised softmax equals the exact one to 1e-6 relative (1e-9 absolute for the
    /// tiny probabilities far below the row's maximum, where `x·log2(e)`'s rounding shows),
    /// rows of any length, large and very negative scores included.
    #[test]
    fn softmax_row_matches_f32_exp() {
        if !supported() {
            return assert!(std::panic::catch_unwind(|| matmul(
                &[0.0; 2],
                1,
                &PackedB::new(&[0.0; 2], 2, 1),
                None
            ))
            .is_err());
        }
        for len in [1, 15, 16, 37, 4096] {
            let mut x: Vec<f32> = values(len, len as u32).iter().map(|v| 40.0 * v).collect();
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
