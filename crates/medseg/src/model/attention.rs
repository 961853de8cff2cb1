//! Attention on the host for the CPU backend: `softmax(q·kᵀ + bias) · v` per head, in blocks
//! of queries so that a block's scores stay in cache (written, normalised and consumed there,
//! never the whole `queries × keys` matrix at once), blocks of every head in parallel.
//!
//! The two products run in `f32` on the `gemm` crate (the kernels Burn's CPU backend uses) or,
//! under `Precision::Bf16`, on medseg's bf16 kernel (`model::bf16`); the scores, the bias and
//! the softmax are `f32` either way. SAM's decomposed relative position ([`RelPos`]) is added to
//! the scores as the dense bias it stands for, not folded into wider keys (three times the
//! multiply-adds in ViT-B's global blocks).

use std::cell::RefCell;

use rayon::prelude::*;

use super::bf16::{self, PackedB};
use super::host::softmax_row;

/// SAM's decomposed relative-position bias for [`attention`]: the query at row `i` gets
/// `h[i, ky] + w[i, kx]` added to its score with the key at `(ky, kx)` (key `ky · kw + kx`).
#[derive(Debug, Clone, Copy)]
pub struct RelPos<'a> {
    /// `[heads, queries, kh]`.
    pub h: &'a [f32],
    /// `[heads, queries, kw]`.
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

/// The arithmetic of the two products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Products {
    /// `f32` (the `gemm` crate).
    F32,
    /// bf16 inputs, `f32` sums ([`bf16::matmul`]; needs [`bf16::supported`]).
    Bf16,
}

/// Scores per block of queries: about 1 MB of `f32`, what a core's L2 holds.
const BLOCK_SCORES: usize = 1 << 18;

/// An additive bias on the scores of an [`attention`] call.
#[derive(Debug, Clone, Copy)]
pub enum Bias<'a> {
    /// SAM's decomposed relative position.
    Rel(RelPos<'a>),
    /// One `[queries, keys]` table per head, shared by every window: head `h` of the call adds
    /// table `h % tables` (TinyViT's attention biases; the call's heads are windows × heads).
    Table {
        /// `[tables, queries, keys]`.
        values: &'a [f32],
        /// Tables (heads per window).
        tables: usize,
    },
}

/// `softmax(q · kᵀ + bias) · v` for independent heads: `q` `[heads, queries, d]` (already
/// scaled), `k` `[heads, keys, d]`, `v` `[heads, keys, dv]` → `[heads, queries, dv]`.
///
/// # Panics
/// If the slices do not have the lengths `s` gives, `bias` does not cover the keys and queries,
/// or `Products::Bf16` is asked for on a CPU without AVX-512 BF16.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: Heads,
    bias: Option<Bias>,
    products: Products,
) -> Vec<f32> {
    check(q, k, v, s, bias);
    let (nq, nk) = (s.queries, s.keys);
    let keys: Vec<Keys> = (0..s.heads)
        .into_par_iter()
        .map(|h| Keys::new(products, part(k, h, nk, s.d), part(v, h, nk, s.dv), s))
        .collect();
    let block = (BLOCK_SCORES / nk.max(1)).clamp(16, nq.max(16));
    let mut out = vec![0.0f32; s.heads * nq * s.dv];
    out.par_chunks_mut((nq * s.dv).max(1))
        .zip(keys.par_iter())
        .enumerate()
        .for_each(|(h, (out, keys))| {
            out.par_chunks_mut(block * s.dv)
                .enumerate()
                .for_each(|(b, out)| {
                    let rows = b * block..b * block + out.len() / s.dv;
                    let bias = bias.map(|bias| bias.rows(h, s, rows.clone()));
                    let q = &part(q, h, nq, s.d)[rows.start * s.d..rows.end * s.d];
                    keys.block(q, bias, out);
                });
        });
    out
}

/// [`attention`]'s shape checks.
fn check(q: &[f32], k: &[f32], v: &[f32], s: Heads, bias: Option<Bias>) {
    let (nq, nk) = (s.queries, s.keys);
    let len = |name: &str, x: &[f32], n: usize| {
        assert_eq!(
            x.len(),
            n,
            "attention: {name} of {} values, not {n}",
            x.len()
        )
    };
    len("q", q, s.heads * nq * s.d);
    len("k", k, s.heads * nk * s.d);
    len("v", v, s.heads * nk * s.dv);
    match bias {
        Some(Bias::Rel(r)) => {
            assert_eq!(
                r.kh * r.kw,
                nk,
                "relative position grid {}x{} for {nk} keys",
                r.kh,
                r.kw
            );
            len("relative position rows", r.h, s.heads * nq * r.kh);
            len("relative position columns", r.w, s.heads * nq * r.kw);
        }
        Some(Bias::Table { values, tables }) => {
            assert!(
                tables > 0 && s.heads.is_multiple_of(tables),
                "{tables} bias tables for {} heads",
                s.heads
            );
            len("bias tables", values, tables * nq * nk);
        }
        None => {}
    }
}

/// A block's bias: relative-position rows, or rows of a table.
enum BlockBias<'a> {
    Rel(RelPos<'a>),
    Dense(&'a [f32]),
}

impl<'a> Bias<'a> {
    /// The bias of head `h`'s queries `rows`.
    fn rows(self, h: usize, s: Heads, rows: std::ops::Range<usize>) -> BlockBias<'a> {
        match self {
            Bias::Rel(r) => BlockBias::Rel(r.rows(h, s.queries, rows)),
            Bias::Table { values, tables } => {
                let table = part(values, h % tables, s.queries, s.keys);
                BlockBias::Dense(&table[rows.start * s.keys..rows.end * s.keys])
            }
        }
    }
}

impl BlockBias<'_> {
    /// Add query `i`'s bias to its scores `s` (one per key).
    fn add_to(&self, i: usize, s: &mut [f32]) {
        match self {
            BlockBias::Rel(r) => r.add_to(i, s),
            BlockBias::Dense(t) => {
                let n = s.len();
                for (s, b) in s.iter_mut().zip(&t[i * n..][..n]) {
                    *s += b;
                }
            }
        }
    }
}

/// Head `head`'s `[rows, width]` part of a `[heads, rows, width]` array.
fn part(x: &[f32], head: usize, rows: usize, width: usize) -> &[f32] {
    &x[head * rows * width..][..rows * width]
}

impl<'a> RelPos<'a> {
    /// The bias rows of head `h`'s queries `rows` (of `nq`).
    fn rows(self, h: usize, nq: usize, rows: std::ops::Range<usize>) -> RelPos<'a> {
        let (kh, kw) = (self.kh, self.kw);
        RelPos {
            h: &part(self.h, h, nq, kh)[rows.start * kh..rows.end * kh],
            w: &part(self.w, h, nq, kw)[rows.start * kw..rows.end * kw],
            kh,
            kw,
        }
    }

    /// Add query `i`'s bias to its scores `s` (one per key).
    fn add_to(&self, i: usize, s: &mut [f32]) {
        let (bh, bw) = (
            &self.h[i * self.kh..][..self.kh],
            &self.w[i * self.kw..][..self.kw],
        );
        for (s, h) in s.chunks_mut(self.kw).zip(bh) {
            for (s, w) in s.iter_mut().zip(bw) {
                *s += h + w;
            }
        }
    }
}

/// One head's keys and values, as its products read them.
enum Keys<'a> {
    /// Row-major `k` `[keys, d]` and `v` `[keys, dv]`.
    F32 {
        k: &'a [f32],
        v: &'a [f32],
        s: Heads,
    },
    /// `kᵀ` `[d, keys]` and `v` `[keys, dv]` packed for the bf16 kernel.
    Bf16 { kt: PackedB, v: PackedB },
}

thread_local! {
    /// A block's scores, reused by every block this thread computes.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl<'a> Keys<'a> {
    fn new(products: Products, k: &'a [f32], v: &'a [f32], s: Heads) -> Self {
        match products {
            Products::F32 => Keys::F32 { k, v, s },
            Products::Bf16 => Keys::Bf16 {
                kt: PackedB::from_fn(s.d, s.keys, |r, c| k[c * s.d + r]),
                v: PackedB::new(v, s.keys, s.dv),
            },
        }
    }

    /// `(d, keys)`.
    fn dims(&self) -> (usize, usize) {
        match self {
            Keys::F32 { s, .. } => (s.d, s.keys),
            Keys::Bf16 { kt, .. } => kt.dims(),
        }
    }

    /// One block of queries `q` `[rows, d]` → `out` `[rows, dv]`.
    fn block(&self, q: &[f32], bias: Option<BlockBias>, out: &mut [f32]) {
        let (d, nk) = self.dims();
        let m = q.len() / d.max(1);
        SCORES.with_borrow_mut(|scores| {
            scores.resize(m * nk, 0.0);
            self.scores(q, m, scores);
            for (i, row) in scores.chunks_mut(nk.max(1)).enumerate() {
                if let Some(b) = &bias {
                    b.add_to(i, row);
                }
                softmax_row(row);
            }
            self.mix(scores, m, out);
        });
    }

    /// `scores` `[m, keys]` = `q` `[m, d]` · `kᵀ`.
    fn scores(&self, q: &[f32], m: usize, scores: &mut [f32]) {
        match self {
            Keys::F32 { k, s, .. } => gemm_f32((m, s.keys, s.d), scores, (q, s.d, 1), (k, 1, s.d)),
            Keys::Bf16 { kt, .. } => bf16::matmul_into(q, m, kt, None, false, scores),
        }
    }

    /// `out` `[m, dv]` = `p` `[m, keys]` · `v`.
    fn mix(&self, p: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Keys::F32 { v, s, .. } => {
                gemm_f32((m, s.dv, s.keys), out, (p, s.keys, 1), (v, s.dv, 1))
            }
            Keys::Bf16 { v, .. } => bf16::matmul_into(p, m, v, None, false, out),
        }
    }
}

/// `c` `[m, n]` (row-major) = `a` · `b`, `a` `[m, k]` and `b` `[k, n]` given as (values, row
/// stride, column stride), on one thread.
fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs + 1
    };
    assert!(
        c.len() >= m * n,
        "gemm: output of {} for [{m}, {n}]",
        c.len()
    );
    assert!(
        a.len() >= last(m, k, a_rs, a_cs),
        "gemm: lhs too short for [{m}, {k}]"
    );
    assert!(
        b.len() >= last(k, n, b_rs, b_cs),
        "gemm: rhs too short for [{k}, {n}]"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every index the product reads or writes, `i·rs + j·cs` for `i`, `j` inside the
    // shapes, is inside the slices (checked above); `c` does not alias `a` or `b` (`&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bf16::tests::values;

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

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A case with SAM's relative-position bias: `(q, k, v, rel h, rel w)`, shape, grid.
    #[allow(clippy::type_complexity)]
    fn case(heads: usize, nq: usize, (kh, kw): (usize, usize)) -> ([Vec<f32>; 5], Heads) {
        let (d, dv) = (24, 16);
        let s = Heads {
            heads,
            queries: nq,
            keys: kh * kw,
            d,
            dv,
        };
        let scaled = |n, seed| values(n, seed).iter().map(|x| 3.0 * x).collect();
        let data = [
            values(heads * nq * d, 6),
            values(heads * s.keys * d, 7),
            values(heads * s.keys * dv, 8),
            scaled(heads * nq * kh, 9),
            scaled(heads * nq * kw, 10),
        ];
        (data, s)
    }

    /// Both arithmetics against the `f32` function, with the bias (which must matter), few
    /// large heads and many small ones, a query count that leaves a short last block, and
    /// queries ≠ keys: `f32` to float rounding, bf16 within bf16's.
    #[test]
    fn attention_with_relative_positions_matches_the_f32_function() {
        for (heads, nq, grid) in [(2, 35, (5, 7)), (16, 35, (5, 7)), (3, 300, (30, 40))] {
            let ([q, k, v, rh, rw], s) = case(heads, nq, grid);
            let (kh, kw) = grid;
            let rel = RelPos {
                h: &rh,
                w: &rw,
                kh,
                kw,
            };
            let bias = |h: usize, i: usize, j: usize| {
                rh[(h * nq + i) * kh + j / kw] + rw[(h * nq + i) * kw + j % kw]
            };
            let want = f32_attention(&q, &k, &v, s, bias);
            let plain = f32_attention(&q, &k, &v, s, |_, _, _| 0.0);
            let got = attention(&q, &k, &v, s, Some(Bias::Rel(rel)), Products::F32);
            let err = worst(&got, &want);
            assert!(err < 1e-5, "f32, {heads} heads x {nq}: max |Δ| {err}");
            assert!(worst(&plain, &want) > 0.1, "the bias changes nothing");
            if !bf16::supported() {
                let bf = || attention(&q, &k, &v, s, Some(Bias::Rel(rel)), Products::Bf16);
                assert!(
                    std::panic::catch_unwind(bf).is_err(),
                    "bf16 ran without AVX-512 BF16"
                );
                continue;
            }
            let got = attention(&q, &k, &v, s, Some(Bias::Rel(rel)), Products::Bf16);
            let err = worst(&got, &want);
            assert!(
                err < 2e-2 && err > 1e-5,
                "bf16, {heads} heads x {nq}: max |Δ| {err}"
            );
        }
    }

    /// Without a bias, many keys for few queries (MedSAM2's cross-attention shape).
    #[test]
    fn attention_without_bias_matches_the_f32_function() {
        let ([q, k, v, ..], s) = case(1, 20, (37, 40));
        let got = attention(&q, &k, &v, s, None, Products::F32);
        let want = f32_attention(&q, &k, &v, s, |_, _, _| 0.0);
        assert!(worst(&got, &want) < 1e-5, "max |Δ| {}", worst(&got, &want));
    }

    /// TinyViT's bias: one table per head, shared by every window (call head `h` adds table
    /// `h % tables`), in both arithmetics.
    #[test]
    fn attention_with_per_head_tables_matches_the_f32_function() {
        let (windows, tables, n) = (3, 2, 49);
        let ([q, k, v, ..], s) = case(windows * tables, n, (7, 7));
        let values: Vec<f32> = values(tables * n * n, 11).iter().map(|x| 4.0 * x).collect();
        let bias = Bias::Table {
            values: &values,
            tables,
        };
        let want = f32_attention(&q, &k, &v, s, |h, i, j| {
            values[((h % tables) * n + i) * n + j]
        });
        let plain = f32_attention(&q, &k, &v, s, |_, _, _| 0.0);
        assert!(worst(&plain, &want) > 0.1, "the tables change nothing");
        let got = attention(&q, &k, &v, s, Some(bias), Products::F32);
        assert!(
            worst(&got, &want) < 1e-5,
            "f32: max |Δ| {}",
            worst(&got, &want)
        );
        if bf16::supported() {
            let got = attention(&q, &k, &v, s, Some(bias), Products::Bf16);
            let err = worst(&got, &want);
            assert!(err < 2e-2 && err > 1e-5, "bf16: max |Δ| {err}");
        }
    }
}
