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
//! nearest-even bf16, `f32` sums): the tests hold the vector kernel to it. Only the tests call
//! it on a CPU without AVX-512 BF16: `Precision::Bf16` falls back to `f32` there (see
//! `crate::Precision`). The attention built on this kernel is in `model::attention`.

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
    let mut c = vec![0.0f32; m * b.n];
    matmul_into(a, m, b, bias, true, &mut c);
    c
}

/// [`matmul`] into `c` `[m, n]` (every element written), its row blocks in parallel or
/// (inside a parallel loop) one after the other.
pub(super) fn matmul_into(
    a: &[f32],
    m: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    par: bool,
    c: &mut [f32],
) {
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
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
}
