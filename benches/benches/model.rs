//! criterion benchmarks of the model families on the CPU backend (and wgpu with
//! `--features wgpu`): image encoder, prompt encoder + mask decoder (1 and 16 boxes),
//! end-to-end 2D. Throughput is reported in input pixels per second.
//!
//! LiteMedSAM uses the official weights (cached, see `medseg fetch-weights`); ViT-B uses the
//! seeded random weights of the parity tests (same shapes and cost as `medsam_vit_b.pth`).
//! Set `MEDSEG_BENCH_VIT=0` to skip ViT-B. LiteMedSAM also runs a 32-slice volume
//! (`segment_volume`, throughput in slices/s). MedSAM2 (seeded random weights too): image
//! encoder, a tracked slice with a full memory bank, a 16-slice volume. On a CPU with AVX-512
//! BF16 each family's image encoder is also timed under `Precision::Bf16` (`image_encoder_bf16`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use burn::tensor::{Device, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};
use medseg::weights::{self, StateDict};
use medseg::{
    io, Intensity, Modality, ModelFamily, Precision, Prompt, Segmenter, Volume, VolumeOptions,
};

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn devices() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut v = vec![("cpu", medseg::cpu())];
    #[cfg(feature = "wgpu")]
    v.push(("wgpu", medseg::wgpu()));
    v
}

fn boxes(n: usize, s: f32) -> PromptBatch {
    PromptBatch {
        boxes: Some(
            (0..n)
                .map(|i| {
                    let o = (i as f32 * 7.0) % (s * 0.3);
                    [s * 0.2 + o, s * 0.25 + o, s * 0.6 + o, s * 0.7 + o]
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// The demo CT slice repeated `n` times (the mask carries through every slice, one embedding
/// and one decode per slice, as a real volume costs) and options with the demo box on the
/// middle slice.
fn repeated_slice(image: &medseg::Image, n: usize) -> (Volume, VolumeOptions) {
    let grey: Vec<f32> = image
        .data
        .chunks_exact(image.channels)
        .map(|p| p[0] as f32)
        .collect();
    let data: Vec<f32> = (0..n).flat_map(|_| grey.iter().copied()).collect();
    let dims = [n, image.height, image.width];
    let vol = Volume::new(data, dims, [1.0; 3], Modality::Other).unwrap();
    let mut opts = VolumeOptions::new(n / 2, [95.0, 255.0, 190.0, 350.0]);
    opts.intensity = Some(Intensity::MinMax);
    (vol, opts)
}

/// `seg` under `Precision::Bf16`, where it runs (the CPU backend on a CPU with AVX-512 BF16):
/// the `*_bf16` benchmarks.
fn in_bf16(seg: &Segmenter) -> Option<Segmenter> {
    let fast = seg.clone().with_precision(Precision::Bf16);
    (fast.precision() == Precision::Bf16).then_some(fast)
}

fn bench_family(c: &mut Criterion, family: ModelFamily, sd: &StateDict) {
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let s = family.image_size();
    for (dev_name, device) in devices() {
        let seg = Segmenter::from_state_dict(family, sd, &device).unwrap();
        let mut g = c.benchmark_group(format!("{family}/{dev_name}"));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if s == 1024 { 60 } else { 15 }));
        let input = seg.preprocess(&image).unwrap();
        let x =
            || Tensor::<4>::from_data(TensorData::new(input.data.clone(), [1, 3, s, s]), &device);
        g.throughput(Throughput::Elements((s * s) as u64));
        g.bench_function("image_encoder", |b| {
            b.iter(|| to_vec(seg.model().expect("a SAM family").embed(x())).unwrap())
        });
        if let Some(fast) = in_bf16(&seg) {
            g.bench_function("image_encoder_bf16", |b| {
                b.iter(|| to_vec(fast.model().expect("a SAM family").embed(x())).unwrap())
            });
        }
        let emb = seg.model().expect("a SAM family").embed(x());
        for n in [1usize, 16] {
            let batch = boxes(n, s as f32);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("prompt_encoder+mask_decoder/{n}_box"), |b| {
                b.iter(|| {
                    let (m, i) = seg
                        .model()
                        .expect("a SAM family")
                        .decode(emb.clone(), &batch);
                    (to_vec(m).unwrap(), to_vec(i).unwrap())
                })
            });
        }
        g.throughput(Throughput::Elements((image.width * image.height) as u64));
        g.bench_function("end_to_end_2d", |b| {
            b.iter(|| {
                let e = seg.embed(&image).unwrap();
                seg.predict(&e, &Prompt::from_box([95.0, 255.0, 190.0, 350.0]))
                    .unwrap()
            })
        });
        if family == ModelFamily::LiteMedSam {
            // 32 slices: the demo CT slice repeated.
            let n = 32;
            let (vol, mut opts) = repeated_slice(&image, n);
            opts.max_intensity_drift = None;
            g.throughput(Throughput::Elements(n as u64));
            g.measurement_time(Duration::from_secs(60));
            g.bench_function("volume_32_slices", |b| {
                b.iter(|| {
                    let r = seg.segment_volume(&vol, &opts, &mut |_, _| {}).unwrap();
                    assert_eq!(
                        r.slices_run.len(),
                        n,
                        "the mask carries through every slice"
                    );
                    r
                })
            });
        }
        g.finish();
    }
}

fn lite(c: &mut Criterion) {
    let sd = StateDict::load(weights::fetch_default().expect("LiteMedSAM weights")).unwrap();
    bench_family(c, ModelFamily::LiteMedSam, &sd);
}

fn vit_b(c: &mut Criterion) {
    if std::env::var("MEDSEG_BENCH_VIT").as_deref() == Ok("0") {
        return;
    }
    let layout = std::fs::read_to_string(fixtures().join("golden/vit_b_layout.txt")).unwrap();
    let sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    bench_family(c, ModelFamily::MedSam, &sd);
}

/// MedSAM2 (the parity tests' seeded weights, the cost of `MedSAM2_latest.pt`): its image
/// encoder, one tracked slice's memory attention + heads + memory encoder with a full bank,
/// and a 16-slice volume by memory propagation (throughput in slices/s). `MEDSEG_BENCH_MEDSAM2=0`
/// skips it.
fn medsam2(c: &mut Criterion) {
    use medseg::model::memory_bank::{ObjectOutputs, TrackOutput};
    use medseg::propagate_memory::no_points;
    if std::env::var("MEDSEG_BENCH_MEDSAM2").as_deref() == Ok("0") {
        return;
    }
    let layout = std::fs::read_to_string(fixtures().join("golden/medsam2_layout.txt")).unwrap();
    let mut sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    let bias = sd
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
        .unwrap();
    bias.data.iter_mut().for_each(|v| *v += 6.0); // the object present, as the parity tests
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    for (dev_name, device) in devices() {
        let seg = Segmenter::from_state_dict(ModelFamily::MedSam2, &sd, &device).unwrap();
        let model = seg.sam2().expect("MedSAM2");
        let input = seg.preprocess(&image).unwrap();
        let x = || {
            Tensor::<4>::from_data(
                TensorData::new(input.data.clone(), [1, 3, 512, 512]),
                &device,
            )
        };
        let mut g = c.benchmark_group(format!("medsam2/{dev_name}"));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(20));
        g.bench_function("image_encoder", |b| {
            b.iter(|| to_vec(model.encode_image(x()).vision).unwrap())
        });
        if let Some(fast) = in_bf16(&seg) {
            let fast = fast.sam2().expect("MedSAM2");
            g.bench_function("image_encoder_bf16", |b| {
                b.iter(|| to_vec(fast.encode_image(x()).vision).unwrap())
            });
        }
        let f = model.encode_image(x());
        let heads = model
            .sam_heads(model.condition(&f, None), &f, no_points(), None, true)
            .unwrap();
        let memory = model.encode_memory(&f, &heads, false).unwrap();
        let out = TrackOutput {
            heads: heads.clone(),
            features: Some(memory.features.clone()),
        };
        let mut bank = ObjectOutputs::default();
        bank.cond.insert(0, out.clone());
        for z in 1..16 {
            bank.tracked.insert(z, out.clone());
        }
        g.bench_function("tracked_slice_after_encoder_full_bank", |b| {
            b.iter(|| {
                let pix = model.condition(&f, Some(&bank.tokens(model, 16, 64, false)));
                let heads = model.sam_heads(pix, &f, no_points(), None, true).unwrap();
                model.encode_memory(&f, &heads, false).unwrap()
            })
        });
        let n = 16;
        let (vol, opts) = repeated_slice(&image, n);
        g.throughput(Throughput::Elements(n as u64));
        g.measurement_time(Duration::from_secs(60));
        g.bench_function("volume_16_slices", |b| {
            b.iter(|| seg.segment_volume(&vol, &opts, &mut |_, _| {}).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, lite, vit_b, medsam2);
criterion_main!(benches);
