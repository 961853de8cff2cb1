//! criterion benchmarks of both model families on the CPU backend (and wgpu with
//! `--features wgpu`): image encoder, prompt encoder + mask decoder (1 and 16 boxes),
//! end-to-end 2D. Throughput is reported in input pixels per second.
//!
//! LiteMedSAM uses the official weights (cached, see `medseg fetch-weights`); ViT-B uses the
//! seeded random weights of the parity tests (same shapes and cost as `medsam_vit_b.pth`).
//! Set `MEDSEG_BENCH_VIT=0` to skip ViT-B. LiteMedSAM also runs a 32-slice volume
//! (`segment_volume`, throughput in slices/s).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use burn::tensor::{Device, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};
use medseg::weights::{self, StateDict};
use medseg::{io, Intensity, Modality, ModelFamily, Prompt, Segmenter, Volume, VolumeOptions};

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
            // 32 slices: the demo CT slice repeated, so the mask carries through every slice
            // (one embedding + one decode per slice, as a real volume costs).
            let grey: Vec<f32> = image
                .data
                .chunks_exact(image.channels)
                .map(|p| p[0] as f32)
                .collect();
            let n = 32;
            let data: Vec<f32> = (0..n).flat_map(|_| grey.iter().copied()).collect();
            let vol = Volume::new(
                data,
                [n, image.height, image.width],
                [1.0; 3],
                Modality::Other,
            )
            .unwrap();
            let mut opts = VolumeOptions::new(n / 2, [95.0, 255.0, 190.0, 350.0]);
            opts.intensity = Some(Intensity::MinMax);
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

criterion_group!(benches, lite, vit_b);
criterion_main!(benches);
