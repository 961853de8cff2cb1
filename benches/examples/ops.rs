//! Time the CPU backend on the operations that dominate LiteMedSAM's encoder, to see where
//! the time goes: `cargo run --release -p medseg-benches --example ops`.
use std::time::Instant;

use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Distribution, Tensor};

fn time<const D: usize>(name: &str, f: impl Fn() -> Tensor<D>) {
    let _ = f().try_into_vec_as::<f32>();
    let t = Instant::now();
    let n = 5;
    for _ in 0..n {
        let _ = f().try_into_vec_as::<f32>();
    }
    println!(
        "{name:50} {:8.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

fn main() {
    let d = medseg::cpu();
    let x64 = Tensor::<4>::random([1, 64, 256, 256], Distribution::Default, &d);
    let x256 = Tensor::<4>::random([1, 256, 256, 256], Distribution::Default, &d);
    let w1 = Tensor::<4>::random([256, 64, 1, 1], Distribution::Default, &d);
    let w3 = Tensor::<4>::random([64, 256, 1, 1], Distribution::Default, &d);
    let wd = Tensor::<4>::random([256, 1, 3, 3], Distribution::Default, &d);
    let b = Tensor::<1>::random([256], Distribution::Default, &d);
    time("conv1x1 64->256 @256^2", || {
        conv2d(
            x64.clone(),
            w1.clone(),
            Some(b.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
    });
    time("conv1x1 256->64 @256^2", || {
        conv2d(
            x256.clone(),
            w3.clone(),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
    });
    time("depthwise3x3 256 @256^2", || {
        conv2d(
            x256.clone(),
            wd.clone(),
            Some(b.clone()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 256),
        )
    });
    time("gelu [1,256,256,256]", || gelu(x256.clone()));
    time("add [1,256,256,256]", || x256.clone() + x256.clone());
    let x3 = x256.clone().reshape([1, 256, 65536]);
    time("matmul as 1x1: [65536,64]x[64,256]", || {
        x64.clone()
            .reshape([64, 65536])
            .swap_dims(0, 1)
            .matmul(w1.clone().reshape([256, 64]).swap_dims(0, 1))
            .unsqueeze::<3>()
    });
    let _ = x3;
    // stage 1 attention: 361 windows, 4 heads, 49 tokens, 32 dims, with bias
    let q = Tensor::<4>::random([361, 4, 49, 32], Distribution::Default, &d);
    let bias = Tensor::<4>::random([1, 4, 49, 49], Distribution::Default, &d);
    time("attention 361x4x49x32 + bias", || {
        attention(
            q.clone(),
            q.clone(),
            q.clone(),
            None,
            Some(bias.clone().expand([361, 4, 49, 49])),
            AttentionModuleOptions::default(),
        )
    });
    time("attention 361x4x49x32 no bias", || {
        attention(
            q.clone(),
            q.clone(),
            q.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
    });
    let t = Tensor::<3>::random([1, 16384, 128], Distribution::Default, &d);
    let w = Tensor::<2>::random([128, 512], Distribution::Default, &d);
    time("linear [16384,128]x[128,512]", || {
        t.clone().matmul(w.clone().unsqueeze::<3>())
    });
    let g = Tensor::<1>::random([128], Distribution::Default, &d);
    time("layer_norm [1,16384,128]", || {
        burn::tensor::module::layer_norm(t.clone(), g.clone(), Some(g.clone()), 1e-5)
    });
    let p = Tensor::<4>::random([1, 133, 133, 128], Distribution::Default, &d);
    time("window partition permute [1,19,7,19,7,128]", || {
        p.clone()
            .reshape([1, 19, 7, 19, 7, 128])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([361, 49, 128])
            .unsqueeze::<4>()
    });
}
