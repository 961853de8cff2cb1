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
//! On a CPU with AMX (`amx_tile` + `amx_bf16`, and the Linux kernel's permission to use the
//! tile data), the same product runs on AMX tiles instead ([`Kernel::Amx`]): `tdpbf16ps`
//! multiplies a 16-row tile of activation pairs by a 16-pair tile of the same packed panels,
//! 16 × 16 × 32 products per instruction. The AMX instructions are written with `asm!` (their
//! intrinsics are nightly-only). Before the first use in a process, the AMX kernel is run on
//! odd shapes against the reference; if it differs, or the permission is refused, the AVX-512
//! BF16 kernel runs (and [`kernel_note`] says why).
//!
//! [`matmul_reference`] is the same arithmetic one element at a time (inputs rounded to
//! nearest-even bf16, `f32` sums): the tests hold both kernels to it. Only the tests call
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
/// Pairs of `k` per AMX tile step (a tile row is 64 bytes): panels are padded to a multiple.
const PAIR_BLOCK: usize = 16;

/// Which bf16 kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbf16ps`), Intel Sapphire Rapids and later.
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`), AMD Zen 4 and later, Intel Cooper Lake and later.
    Avx512Bf16,
}

impl Kernel {
    /// `AMX` / `AVX-512 BF16`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX",
            Kernel::Avx512Bf16 => "AVX-512 BF16",
        }
    }
}

/// The kernel [`matmul`] runs on this CPU: AMX where the CPU has it, the OS lets this process
/// use it and it passed its check against the reference; else AVX-512 BF16; `None` without
/// AVX-512 BF16. Decided once per process.
pub fn kernel() -> Option<Kernel> {
    if !supported() {
        None
    } else if amx_state().is_ok() {
        Some(Kernel::Amx)
    } else {
        Some(Kernel::Avx512Bf16)
    }
}

/// Why AMX does not run here (the CPU lacks it, the permission was refused, or its check
/// failed), or `None` where it runs.
pub fn kernel_note() -> Option<&'static str> {
    amx_state().as_ref().err().map(String::as_str)
}

/// Whether AMX runs here, decided once: the CPU, the OS permission, the check.
fn amx_state() -> &'static Result<(), String> {
    static STATE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    STATE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if !supported() {
                return Err("no AVX-512 BF16, so no bf16 kernel at all".into());
            }
            amx::enable()?;
            amx_self_check()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Err("AMX is x86-64 only".into())
        }
    })
}

/// The AMX kernel against the reference on odd shapes (every tail), before any real use.
#[cfg(target_arch = "x86_64")]
fn amx_self_check() -> Result<(), String> {
    for (i, &(m, k, n)) in [(1, 2, 1), (37, 45, 70), (70, 96, 33)].iter().enumerate() {
        let (a, b, bias) = (
            test_values(m * k, 7 + i as u32),
            test_values(k * n, 8),
            test_values(n, 9),
        );
        let packed = PackedB::new(&b, k, n);
        let mut got = vec![0.0f32; m * n];
        // SAFETY: `amx::enable` succeeded (the CPU has AMX and AVX-512 BF16, the OS granted
        // the tile data); the shapes fit (`check_shapes` below holds by construction).
        unsafe { amx::rows(&a, m, &packed, Some(&bias), &mut got) };
        let want = matmul_reference(&a, m, &packed, Some(&bias));
        if let Some(bad) = mismatch(&got, &want, k) {
            return Err(format!(
                "the AMX kernel's check against the reference failed on [{m}x{k}]·[{k}x{n}] ({bad}); AVX-512 BF16 runs instead"
            ));
        }
    }
    Ok(())
}

/// The first element where a kernel's result `got` is further from the reference `want` than
/// `f32` sums in another order can be (`k` products per element), as text.
fn mismatch(got: &[f32], want: &[f32], k: usize) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} values, not {}", got.len(), want.len()));
    }
    got.iter().zip(want).enumerate().find_map(|(i, (g, w))| {
        let ok = (g - w).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
        (!ok).then(|| format!("element {i}: {g} vs {w}"))
    })
}

/// Deterministic values in [-1, 1) (xorshift), for the kernel checks and tests.
fn test_values(n: usize, seed: u32) -> Vec<f32> {
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
    /// Pair rows per panel: `ceil(k / 2)` rounded up to a multiple of [`PAIR_BLOCK`].
    stride: usize,
    /// `ceil(n / NR)` panels × `stride` pairs × `NR` lanes; each lane two bf16 (low: even
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
        let stride = k.div_ceil(2).next_multiple_of(PAIR_BLOCK);
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0u32; n_panels * stride * NR];
        let bits = |r: usize, c: usize| {
            if r < k {
                to_bf16_bits(at(r, c)) as u32
            } else {
                0
            }
        };
        for (p, panel) in panels.chunks_mut(stride * NR).enumerate() {
            for (j, lanes) in panel.chunks_mut(NR).enumerate() {
                for (lane, v) in lanes.iter_mut().enumerate() {
                    let c = p * NR + lane;
                    if c < n {
                        *v = bits(2 * j, c) | bits(2 * j + 1, c) << 16;
                    }
                }
            }
        }
        Self {
            k,
            n,
            stride,
            panels,
        }
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

/// `a` `[m, k]` · `b` + `bias` → `[m, n]`, on this CPU's [`kernel`], rows in parallel.
///
/// # Panics
/// If the CPU lacks AVX-512 BF16 ([`supported`]) or `a`/`bias` do not fit `b`: callers check
/// both (the layer that owns `b` is only built with it on a CPU that has the kernel).
pub fn matmul(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>) -> Vec<f32> {
    let mut c = vec![0.0f32; m * b.n];
    matmul_into(a, m, b, bias, true, &mut c);
    c
}

/// [`matmul`] on a kernel of the caller's choice (the tests run each kernel the CPU has).
///
/// # Panics
/// If `kernel` cannot run here (not [`kernel`]'s choice nor AVX-512 BF16 on a CPU with it).
pub fn matmul_on(
    kernel: Kernel,
    a: &[f32],
    m: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * b.n];
    run(kernel, a, m, b, bias, true, &mut c);
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
    let kernel = kernel().expect("bf16::matmul needs AVX-512 BF16");
    run(kernel, a, m, b, bias, par, c);
}

/// [`matmul_into`] on `kernel`.
fn run(
    kernel: Kernel,
    a: &[f32],
    m: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    par: bool,
    c: &mut [f32],
) {
    assert!(supported(), "bf16::matmul needs AVX-512 BF16");
    if kernel == Kernel::Amx {
        assert!(
            amx_state().is_ok(),
            "bf16: the AMX kernel does not run here"
        );
    }
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
    let amx = kernel == Kernel::Amx;
    let task = |(t, c_rows): (usize, &mut [f32])| {
        let rows = c_rows.len() / b.n;
        let a_rows = &a[t * ROWS_PER_TASK * b.k..][..rows * b.k];
        // SAFETY: `supported()` was checked above, and AMX runs only once `amx::enable` and
        // its check passed (`amx_state`); the shapes were checked.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if amx {
                amx::rows(a_rows, rows, b, bias, c_rows)
            } else {
                avx512::rows(a_rows, rows, b, bias, c_rows)
            }
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
            let lanes = &b.panels[(col / NR) * b.stride * NR..];
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
        for (p, panel) in b.panels.chunks(b.stride * NR).enumerate() {
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
    pub(super) unsafe fn convert_row(src: &[f32], dst: &mut [u32]) {
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
    pub(super) fn store(
        tile: &[f32],
        row0: usize,
        rows: usize,
        col0: usize,
        n: usize,
        bias: Option<&[f32]>,
        c: &mut [f32],
    ) {
        let cols = NR.min(n - col0);
        for r in 0..(tile.len() / NR).min(rows - row0) {
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

/// The AMX kernel: `tdpbf16ps` on 16 × 64-byte tiles (`asm!`; the intrinsics are nightly-only).
/// Four accumulator tiles hold a 32 × 32 block of `C`; each step loads two tiles of `A` (16
/// rows × 16 pairs each) and the panel's two 16-column halves (16 pairs each), as packed.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{PackedB, NR, PAIR_BLOCK};
    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;

    /// Rows of `A` per tile.
    const TILE_ROWS: usize = 16;
    /// Rows of `A` per block of four accumulator tiles.
    const BLOCK_ROWS: usize = 2 * TILE_ROWS;

    /// Check the CPU (CPUID.7.0:EDX bit 22 AMX-BF16, bit 24 AMX-TILE) and ask Linux for the
    /// tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once per process).
    pub fn enable() -> Result<(), String> {
        // CPUID leaf 7 exists on every x86-64 CPU with AVX-512 (checked by the caller).
        let edx = __cpuid_count(7, 0).edx;
        if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
            return Err("this CPU has no AMX (amx_tile, amx_bf16)".into());
        }
        request_tile_data()
    }

    #[cfg(target_os = "linux")]
    fn request_tile_data() -> Result<(), String> {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain system call with integer arguments; it changes only this process's
        // permitted extended state.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret == 0 {
            Ok(())
        } else {
            Err(format!(
                "Linux refused the AMX tile data to this process (arch_prctl error {})",
                -ret
            ))
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_data() -> Result<(), String> {
        Err("AMX is used on Linux only".into())
    }

    /// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn all_16x64() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c[48 + t] = TILE_ROWS as u8;
            }
            Self(c)
        }
    }

    /// `c` `[rows, n]` = `a` `[rows, k]` · `b` + bias, for one task's rows.
    ///
    /// # Safety
    /// [`enable`] succeeded and the CPU has AVX-512 BF16; `a`, `c` and `bias` fit `b`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn rows(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &mut [f32]) {
        let (pairs, stride) = (b.k.div_ceil(2), b.stride);
        let blocks = rows.div_ceil(BLOCK_ROWS);
        // A in bf16, `stride` u32 per row (zero past `k`), zero rows up to whole blocks.
        let mut a16 = vec![0u32; blocks * BLOCK_ROWS * stride];
        for (r, dst) in a16.chunks_mut(stride).take(rows).enumerate() {
            super::avx512::convert_row(&a[r * b.k..][..b.k], &mut dst[..pairs]);
        }
        let config = TileConfig::all_16x64();
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let mut tile = vec![0.0f32; BLOCK_ROWS * NR];
        for (p, panel) in b.panels.chunks(stride * NR).enumerate() {
            for t in 0..blocks {
                let a_block = &a16[t * BLOCK_ROWS * stride..][..BLOCK_ROWS * stride];
                block(a_block, panel, stride, &mut tile);
                super::avx512::store(&tile, t * BLOCK_ROWS, rows, p * NR, b.n, bias, c);
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }

    /// `tile` `[32, NR]` = 32 rows of `a16` (`stride` pairs each) · one panel.
    ///
    /// Every tile load stays inside the slices: rows `< 32` of `a16` and pair rows `< stride`
    /// of the panel, `stride` a multiple of 16.
    unsafe fn block(a16: &[u32], panel: &[u32], stride: usize, tile: &mut [f32]) {
        assert!(
            stride.is_multiple_of(PAIR_BLOCK)
                && a16.len() == BLOCK_ROWS * stride
                && panel.len() == stride * NR
                && tile.len() == BLOCK_ROWS * NR,
            "amx block: shapes do not fit"
        );
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let (a_stride, b_stride) = (stride * 4, NR * 4);
        for j in (0..stride).step_by(PAIR_BLOCK) {
            let a0 = a16.as_ptr().add(j);
            let a1 = a16.as_ptr().add(TILE_ROWS * stride + j);
            let b0 = panel.as_ptr().add(j * NR);
            let b1 = b0.add(NR / 2);
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) a_stride,
                sb = in(reg) b_stride,
                options(nostack, readonly),
            );
        }
        let out = tile.as_mut_ptr();
        asm!(
            "tilestored [{c0} + {s} * 1], tmm0",
            "tilestored [{c1} + {s} * 1], tmm1",
            "tilestored [{c2} + {s} * 1], tmm2",
            "tilestored [{c3} + {s} * 1], tmm3",
            c0 = in(reg) out,
            c1 = in(reg) out.add(NR / 2),
            c2 = in(reg) out.add(TILE_ROWS * NR),
            c3 = in(reg) out.add(TILE_ROWS * NR + NR / 2),
            s = in(reg) NR * 4,
            options(nostack),
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        test_values(n, seed)
    }

    /// Say on the real stderr (not the test harness's captured output, so that it shows in
    /// every run) that a kernel was not run on this CPU.
    fn not_run(what: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "NOT RUN on this CPU: {what}");
    }

    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 2, 1),
        (13, 64, 32),
        (97, 33, 45),
        (200, 768, 70),
        (7, 3, 100),
        (129, 100, 97),
    ];

    /// `kernel` against the reference on every shape of [`SHAPES`] (tails of every size).
    fn check_kernel(kernel: Kernel) {
        for &(m, k, n) in &SHAPES {
            let (a, b, bias) = (values(m * k, 3), values(k * n, 4), values(n, 5));
            let packed = PackedB::new(&b, k, n);
            let got = matmul_on(kernel, &a, m, &packed, Some(&bias));
            let want = matmul_reference(&a, m, &packed, Some(&bias));
            if let Some(bad) = mismatch(&got, &want, k) {
                panic!("{} [{m}x{k}x{n}]: {bad}", kernel.name());
            }
        }
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
            not_run("the AVX-512 BF16 kernel (this CPU has no AVX-512 BF16)");
            return;
        }
        check_kernel(Kernel::Avx512Bf16);
    }

    /// Where the CPU has AMX (and the OS grants it), the AMX kernel equals the reference on
    /// the same shapes, and `matmul` takes it. Elsewhere it says plainly that it did not run,
    /// and asking for it panics rather than running something else.
    #[test]
    fn amx_kernel_matches_the_reference_where_it_runs() {
        match kernel_note() {
            None => {
                assert_eq!(kernel(), Some(Kernel::Amx));
                check_kernel(Kernel::Amx);
            }
            Some(why) => {
                not_run(&format!("the AMX kernel ({why})"));
                assert_ne!(kernel(), Some(Kernel::Amx));
                let amx = || {
                    matmul_on(
                        Kernel::Amx,
                        &[0.0; 4],
                        2,
                        &PackedB::new(&[0.0; 4], 2, 2),
                        None,
                    )
                };
                assert!(
                    std::panic::catch_unwind(amx).is_err(),
                    "AMX ran where it cannot"
                );
            }
        }
    }

    /// Panels are padded to whole AMX steps with zeros: the packed weights of `k` and of `k`
    /// with zero rows appended up to the padding are the same, so the padding adds nothing.
    #[test]
    fn panels_are_padded_with_zeros_to_whole_tile_steps() {
        let (k, n) = (37, 40);
        let b = values(k * n, 6);
        let packed = PackedB::new(&b, k, n);
        assert_eq!(packed.stride, 32, "19 pairs pad to 32");
        let mut longer = b.clone();
        longer.extend(std::iter::repeat_n(0.0, (64 - k) * n));
        assert_eq!(packed.panels, PackedB::new(&longer, 64, n).panels);
    }
}
