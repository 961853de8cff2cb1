//! medseg's side of `benches/compare/compare.sh`: median time of each stage on the inputs the
//! PyTorch side uses, and peak RSS. Prints one JSON object.
//!
//! `stage_times lite|lite-random|vitb|medsam2 REPEATS [DECODER_REPEATS] [--precision bf16]`
//! (thread count: `RAYON_NUM_THREADS`; `"precision"` in the output is the one that ran). `lite` is the official LiteMedSAM checkpoint (from the cache);
//! `lite-random`, `vitb` and `medsam2` are seeded random weights of the official layouts (same
//! shapes, so the same work; nothing to carry to a machine without the checkpoint).
//! For `medsam2` (one tracked slice of a 3D run with a full memory bank: the key slice, 6
//! slices behind, 15 object pointers): `encoder_s` the image encoder, `memory_attention_s`
//! the memory attention, `decoder_s` the memory attention + SAM heads + memory encoder after
//! the encoder, `decoder_next_s` the SAM heads alone.
//! `MEDSEG_DEVICE=wgpu` runs on the GPU (built with `--features wgpu`); `MEDSEG_ROOT` points at
//! the repository when the binary runs outside the tree it was built in.
//! `decoder_s` is a first prompt on an embedding (the whole decoder); `decoder_next_s` a further
//! prompt, which reuses the decoder's image side kept from the first.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};
use medseg::weights::{self, StateDict};
use medseg::{io, ModelFamily, Precision, Segmenter};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seeded random weights (seed 2024) of the layout in `tests/fixtures/golden/{file}`, with
/// BatchNorm variances made positive.
fn random_weights(root: &std::path::Path, file: &str) -> medseg::Result<StateDict> {
    let path = root.join("tests/fixtures/golden").join(file);
    let layout = std::fs::read_to_string(&path).map_err(|e| medseg::Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let mut sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    for (name, t) in sd.tensors.iter_mut() {
        if name.ends_with("running_var") {
            t.data.iter_mut().for_each(|v| *v = v.abs() + 0.5);
        }
    }
    Ok(sd)
}

/// `MEDSEG_DEVICE`: `cpu` (default) or `wgpu`.
fn device() -> medseg::Result<burn::tensor::Device> {
    match std::env::var("MEDSEG_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Ok(medseg::cpu()),
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => Ok(medseg::wgpu()),
        Ok(other) => Err(medseg::Error::InvalidOption(format!(
            "MEDSEG_DEVICE={other}: expected cpu, or wgpu in a build with --features wgpu"
        ))),
    }
}

fn main() -> medseg::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let precision = medseg_benches::take_precision(&mut args)?;
    let which = args.get(1).map(String::as_str).unwrap_or("lite");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dec_reps: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(reps.max(10));
    let root = std::env::var_os("MEDSEG_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let t0 = Instant::now();
    let (family, sd) = match which {
        "vitb" => (
            ModelFamily::MedSam,
            random_weights(&root, "vit_b_layout.txt")?,
        ),
        "lite-random" => (
            ModelFamily::LiteMedSam,
            random_weights(&root, "lite_layout.txt")?,
        ),
        "lite" => (
            ModelFamily::LiteMedSam,
            StateDict::load(weights::fetch_default()?)?,
        ),
        "medsam2" => return medsam2(&root, reps, precision, t0),
        other => {
            return Err(medseg::Error::InvalidOption(format!(
                "model {other}: expected lite, lite-random, vitb or medsam2"
            )))
        }
    };
    let device = device()?;
    let seg = Segmenter::from_state_dict(family, &sd, &device)?.with_precision(precision);
    drop(sd);
    let load_s = t0.elapsed().as_secs_f64();
    let image = io::read_png(root.join("tests/fixtures/images/demo_ct.png"))?;
    let input = seg.preprocess(&image)?;
    let s = input.size;
    let mut enc = Vec::new();
    let mut emb = None;
    for _ in 0..reps {
        let x = Tensor::<4>::from_data(TensorData::new(input.data.clone(), [1, 3, s, s]), &device);
        let t = Instant::now();
        let e = seg.model().expect("a SAM family").embed(x);
        let _ = to_vec(e.clone())?;
        enc.push(t.elapsed().as_secs_f64());
        emb = Some(e);
    }
    let emb = emb.expect("reps > 0");
    let b = seg
        .frame((image.height, image.width))
        .box_to_model([95.0, 255.0, 190.0, 350.0]);
    let batch = PromptBatch {
        boxes: Some(vec![b]),
        ..Default::default()
    };
    let mut dec = Vec::new();
    for _ in 0..dec_reps {
        let t = Instant::now();
        let (m, i) = seg
            .model()
            .expect("a SAM family")
            .decode(emb.clone(), &batch);
        let _ = (to_vec(m)?, to_vec(i)?);
        dec.push(t.elapsed().as_secs_f64());
    }
    // Further prompts on one embedding: the decoder's image side is made once and reused.
    let side = seg.model().expect("a SAM family").prepare(emb.clone());
    let mut next = Vec::new();
    for _ in 0..dec_reps {
        let t = Instant::now();
        let (m, i) = seg
            .model()
            .expect("a SAM family")
            .decode_prepared(&side, &batch)
            .expect("a box prompt has no mask input");
        let _ = (to_vec(m)?, to_vec(i)?);
        next.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"model\": \"{which}\", \"precision\": \"{}\", \"load_s\": {load_s:.4}, \"encoder_s\": {:.4}, \"decoder_s\": {:.5}, \"decoder_next_s\": {:.5}, \"peak_rss_mb\": {:.0}}}",
        seg.precision(),
        median(enc),
        median(dec),
        median(next),
        medseg_benches::peak_rss_mb()
    );
    Ok(())
}

/// MedSAM2's stages on one demo slice (see the module docs).
fn medsam2(
    root: &std::path::Path,
    reps: usize,
    precision: Precision,
    t0: Instant,
) -> medseg::Result<()> {
    use medseg::model::memory_bank::{ObjectOutputs, TrackOutput};
    use medseg::propagate_memory::no_points;
    let mut sd = random_weights(root, "medsam2_layout.txt")?;
    if let Some(b) = sd
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
    {
        b.data.iter_mut().for_each(|v| *v += 6.0); // the object present, as the parity tests
    }
    let device = device()?;
    let seg =
        Segmenter::from_state_dict(ModelFamily::MedSam2, &sd, &device)?.with_precision(precision);
    drop(sd);
    let load_s = t0.elapsed().as_secs_f64();
    let model = seg.sam2().expect("MedSAM2");
    let image = io::read_png(root.join("tests/fixtures/images/demo_ct.png"))?;
    let input = seg.preprocess(&image)?;
    let x = || {
        Tensor::<4>::from_data(
            TensorData::new(input.data.clone(), [1, 3, 512, 512]),
            &device,
        )
    };
    let f = model.encode_image(x());
    let heads = model.sam_heads(model.condition(&f, None), &f, no_points(), None, true)?;
    let memory = model.encode_memory(&f, &heads, false)?;
    let out = TrackOutput {
        heads: heads.clone(),
        features: Some(memory.features.clone()),
    };
    let mut bank = ObjectOutputs::default();
    bank.cond.insert(0, out.clone());
    for z in 1..16 {
        bank.tracked.insert(z, out.clone());
    }
    let (mut enc, mut att, mut slice, mut heads_t) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        let f = model.encode_image(x());
        let _ = to_vec(f.vision.clone())?;
        enc.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let pix = model.condition(&f, Some(&bank.tokens(model, 16, 64, false)));
        let _ = to_vec(pix.clone())?;
        att.push(t.elapsed().as_secs_f64());
        let th = Instant::now();
        let heads = model.sam_heads(pix, &f, no_points(), None, true)?;
        heads_t.push(th.elapsed().as_secs_f64());
        let _ = model.encode_memory(&f, &heads, false)?;
        slice.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"model\": \"medsam2\", \"precision\": \"{}\", \"load_s\": {load_s:.4}, \"encoder_s\": {:.4}, \"memory_attention_s\": {:.4}, \"decoder_s\": {:.5}, \"decoder_next_s\": {:.5}, \"peak_rss_mb\": {:.0}}}",
        seg.precision(),
        median(enc),
        median(att),
        median(slice),
        median(heads_t),
        medseg_benches::peak_rss_mb()
    );
    Ok(())
}
