//! What `Precision::Bf16` runs on this CPU, decided once per process and said in one place
//! ([`bf16_choice`]; `medseg info --cpu`, and `Segmenter::precision` / Python's
//! `Segmenter.precision` give its outcome).
//!
//! bf16 is there for speed, so it must never be slower than `f32`: where a bf16 kernel exists
//! ([`bf16::kernel`]: AMX, else AVX-512 BF16), its product and the `f32` one (the `gemm` crate,
//! which Burn's CPU backend runs) are timed once on a shape of the encoders' linear layers,
//! interleaved, best of [`ROUNDS`]; bf16 runs only if it is at least [`MARGIN`] faster, else
//! `Precision::Bf16` falls back to `f32` (with the note every fallback prints). On Intel CPUs
//! without AMX, AVX-512 BF16's `vdpbf16ps` issues on one port where `f32` FMAs issue on two,
//! so the bf16 kernel is no faster there; on AMD Zen 4 it is about twice as fast.
//!
//! `MEDSEG_BF16_CHECK=off` skips the timing (bf16 runs wherever a kernel exists: the tests
//! that hold the bf16 path to `f32` use it, so they run on every CPU with the kernel).

use std::sync::OnceLock;
use std::time::Instant;

use super::bf16;

/// The check's shape `[m, k] · [k, n]`: 1 024 tokens through a 768 → 768 projection
/// (Hiera's and ViT-B's widths; 1.2 GFLOP, ~10 ms in `f32` on two cores).
pub const CHECK_SHAPE: (usize, usize, usize) = (1024, 768, 768);
/// Timed rounds of each product (after one untimed warm-up each); the best counts.
pub const ROUNDS: usize = 3;
/// bf16 runs only if `f32 time ≥ MARGIN × bf16 time`.
pub const MARGIN: f64 = 1.1;

/// What `Precision::Bf16` runs on this CPU, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Choice {
    /// The bf16 kernel this CPU has (`None`: no AVX-512 BF16).
    pub kernel: Option<bf16::Kernel>,
    /// Best milliseconds of the `f32` and the bf16 product on [`CHECK_SHAPE`], where timed.
    pub timing: Option<(f64, f64)>,
    /// Whether `Precision::Bf16` runs in bf16 here.
    pub runs_bf16: bool,
    /// One sentence: what runs and why.
    pub reason: String,
}

/// The choice for this process (timed on the first call; later calls return it).
pub fn bf16_choice() -> &'static Bf16Choice {
    static CHOICE: OnceLock<Bf16Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let check = std::env::var("MEDSEG_BF16_CHECK").as_deref() != Ok("off");
        let timing = match bf16::kernel() {
            Some(kernel) if check => Some(time_products(kernel)),
            _ => None,
        };
        decide(bf16::kernel(), timing)
    })
}

/// The rule, apart from the clock: no kernel → `f32`; not timed (`MEDSEG_BF16_CHECK=off`) →
/// bf16; timed → bf16 only if `f32 ≥ MARGIN × bf16`.
pub fn decide(kernel: Option<bf16::Kernel>, timing: Option<(f64, f64)>) -> Bf16Choice {
    let (runs_bf16, reason) = match (kernel, timing) {
        (None, _) => (
            false,
            "this CPU has no AVX-512 BF16 (vdpbf16ps)".to_string(),
        ),
        (Some(k), None) => (
            true,
            format!(
                "bf16 on {} (speed check skipped: MEDSEG_BF16_CHECK=off)",
                k.name()
            ),
        ),
        (Some(k), Some((f32_ms, bf16_ms))) => {
            let (m, kk, n) = CHECK_SHAPE;
            let measured =
                format!("{bf16_ms:.1} ms against f32's {f32_ms:.1} ms on [{m}x{kk}]·[{kk}x{n}]");
            if f32_ms >= MARGIN * bf16_ms {
                (true, format!("bf16 on {}: {measured}", k.name()))
            } else {
                (
                    false,
                    format!(
                        "the bf16 kernel ({}) is not faster than f32 on this CPU ({measured}; \
                         MEDSEG_BF16_CHECK=off runs it anyway)",
                        k.name()
                    ),
                )
            }
        }
    };
    Bf16Choice {
        kernel,
        timing,
        runs_bf16,
        reason,
    }
}

/// Best milliseconds of the `f32` and the bf16 product on [`CHECK_SHAPE`], interleaved.
fn time_products(kernel: bf16::Kernel) -> (f64, f64) {
    let (m, k, n) = CHECK_SHAPE;
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i % 251) as f32 - 125.0) / 125.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i % 241) as f32 - 120.0) / 1200.0)
        .collect();
    let packed = bf16::PackedB::new(&b, k, n);
    let mut c = vec![0.0f32; m * n];
    let mut f32_run = || gemm_f32(&a, &b, &mut c, (m, k, n));
    let mut bf16_run = || {
        std::hint::black_box(bf16::matmul_on(kernel, &a, m, &packed, None));
    };
    let ms = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut best_f32, mut best_bf16) = (f64::INFINITY, f64::INFINITY);
    for round in 0..=ROUNDS {
        let (f, b) = (ms(&mut f32_run), ms(&mut bf16_run));
        if round > 0 {
            best_f32 = best_f32.min(f);
            best_bf16 = best_bf16.min(b);
        }
    }
    (best_f32, best_bf16)
}

/// `c = a · b`, row-major `[m, k] · [k, n]`, on the `gemm` crate on every thread (as Burn's
/// CPU backend multiplies in `f32`).
fn gemm_f32(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize)) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    // SAFETY: the three slices hold exactly the shapes given (checked above), row-major with
    // the strides given; `c` does not alias `a` or `b`.
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
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// The CPU features medseg's kernels choose between, as `(name, present)` (x86-64; empty
/// elsewhere).
pub fn features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        vec![
            ("avx2+fma", has!("avx2") && has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512_bf16", has!("avx512bf16")),
            ("amx (usable)", bf16::kernel_note().is_none()),
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bf16::Kernel;

    /// The rule: no kernel never runs bf16; an untimed kernel does; a timed one only when
    /// f32 takes at least MARGIN times as long; the reason names what was measured.
    #[test]
    fn bf16_runs_only_where_it_is_faster() {
        assert!(!decide(None, Some((10.0, 1.0))).runs_bf16);
        assert!(decide(None, None).reason.contains("no AVX-512 BF16"));
        let untimed = decide(Some(Kernel::Avx512Bf16), None);
        assert!(untimed.runs_bf16 && untimed.reason.contains("MEDSEG_BF16_CHECK=off"));
        let faster = decide(Some(Kernel::Amx), Some((20.0, 10.0)));
        assert!(
            faster.runs_bf16 && faster.reason.contains("AMX"),
            "{faster:?}"
        );
        let slower = decide(Some(Kernel::Avx512Bf16), Some((10.0, 12.5)));
        assert!(!slower.runs_bf16);
        assert!(
            slower.reason.contains("12.5 ms against f32's 10.0 ms")
                && slower.reason.contains("not faster"),
            "{}",
            slower.reason
        );
        let even = decide(Some(Kernel::Avx512Bf16), Some((10.5, 10.0)));
        assert!(!even.runs_bf16, "5 % is inside the noise: f32 stays");
    }

    /// The process's choice agrees with the rule on its own numbers, and a CPU without a
    /// kernel was not timed.
    #[test]
    fn the_process_choice_follows_the_rule() {
        let c = bf16_choice();
        eprintln!("bf16 choice on this CPU: {}", c.reason);
        assert_eq!(c.kernel, bf16::kernel());
        assert_eq!(*c, decide(c.kernel, c.timing));
        if c.kernel.is_none() {
            assert!(c.timing.is_none());
        }
        if let Some((f, b)) = c.timing {
            assert!(f > 0.0 && b > 0.0 && f.is_finite() && b.is_finite());
        }
    }
}
