//! Time `Precision::Bf16`'s matrix product against the `f32` one (Burn's `linear` on the CPU
//! backend) on the shapes of the image encoders' linear layers:
//! `cargo run --release -p medseg-benches --example bf16_gemm`.
use std::time::Instant;

use burn::tensor::module::linear;
use burn::tensor::{Distribution, Tensor};
use medseg::model::bf16;

fn best_ms(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let d = medseg::cpu();
    println!(
        "{:32} {:>9} {:>9} {:>6} {:>9}",
        "[m x k] . [k x n]", "f32 ms", "bf16 ms", "ratio", "pack ms"
    );
    for (m, k, n) in [
        (4096, 768, 2304),
        (4096, 768, 3072),
        (4096, 3072, 768),
        (16384, 96, 288),
        (1024, 768, 2304),
    ] {
        let x = Tensor::<2>::random([m, k], Distribution::Default, &d);
        let w = Tensor::<2>::random([k, n], Distribution::Default, &d);
        let b = Tensor::<1>::random([n], Distribution::Default, &d);
        let f = best_ms(|| {
            let _ = linear(x.clone(), w.clone(), Some(b.clone())).into_data();
        });
        let a = x.to_data().try_to_vec::<f32>().unwrap();
        let wv = w.to_data().try_to_vec::<f32>().unwrap();
        let t = Instant::now();
        let packed = bf16::PackedB::new(&wv, k, n);
        let pack_ms = t.elapsed().as_secs_f64() * 1e3;
        let bias = b.to_data().try_to_vec::<f32>().unwrap();
        let h = if bf16::supported() {
            best_ms(|| {
                let _ = bf16::matmul(&a, m, &packed, Some(&bias));
            })
        } else {
            f64::NAN
        };
        println!(
            "{:32} {f:9.2} {h:9.2} {:6.2} {pack_ms:9.2}",
            format!("[{m}x{k}].[{k}x{n}]"),
            h / f
        );
    }
}
