//! Where MedSAM2's time goes per tracked slice: `medsam2_stages [REPS]` times, on one template
//! slice at 512² with the parity tests' seeded weights and a full memory bank (the key slice,
//! 6 slices behind, 15 object pointers), the image encoder, the memory attention, the SAM heads
//! and the memory encoder (medians of REPS runs; threads: `RAYON_NUM_THREADS`).

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use medseg::model::memory_bank::MemoryBank;
use medseg::model::prompt_encoder::Points;
use medseg::model::sam2::Sam2;
use medseg::segmenter::to_vec;
use medseg::testing::{parse_layout, seeded_random_state_dict};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> medseg::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let layout = std::fs::read_to_string(root.join("tests/fixtures/golden/medsam2_layout.txt"))
        .map_err(|e| medseg::Error::Io {
            path: root.clone(),
            source: e,
        })?;
    let mut sd = seeded_random_state_dict(&parse_layout(&layout), 2024);
    if let Some(b) = sd
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
    {
        b.data.iter_mut().for_each(|v| *v += 6.0);
    }
    let device = medseg::cpu();
    let model = Sam2::from_state_dict(&sd, 512, &device)?;
    let x = || {
        let v: Vec<f32> = (0..3 * 512 * 512)
            .map(|i| ((i % 977) as f32 / 977.0 - 0.5) * 2.0)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [1, 3, 512, 512]), &device)
    };
    let f = model.encode_image(x());
    let pad = || Points {
        coords: vec![[0.0, 0.0]],
        labels: vec![-1],
        per_prompt: 1,
    };
    let heads = model.sam_heads(model.condition(&f, None), &f, pad(), true)?;
    let memory = model.encode_memory(&f, &heads, false)?;
    let mut bank = MemoryBank::new(0, memory.clone(), 64, false);
    for z in 1..16 {
        bank.insert(z, memory.clone());
    }
    let (mut enc, mut att, mut dec, mut mem) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        let f = model.encode_image(x());
        let _ = to_vec(f.vision.clone())?;
        enc.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let pix = model.condition(&f, Some(&bank.tokens(&model, 16)));
        let _ = to_vec(pix.clone())?;
        att.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let heads = model.sam_heads(pix, &f, pad(), true)?;
        dec.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let _ = model.encode_memory(&f, &heads, false)?;
        mem.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"image_encoder_s\": {:.3}, \"memory_attention_s\": {:.3}, \"heads_s\": {:.3}, \"memory_encoder_s\": {:.3}}}",
        median(enc), median(att), median(dec), median(mem)
    );
    Ok(())
}
