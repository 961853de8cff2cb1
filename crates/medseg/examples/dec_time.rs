use medseg::model::PromptBatch;
use medseg::segmenter::to_vec;
use medseg::{io, ModelFamily, Prompt, Segmenter};
use std::time::Instant;
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
fn main() -> medseg::Result<()> {
    let device = medseg::cpu();
    let seg = Segmenter::new(ModelFamily::LiteMedSam, None, &device)?;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let image = io::read_png(root.join("tests/fixtures/images/demo_ct.png"))?;
    let emb = seg.embed(&image)?;
    let b = seg
        .frame((image.height, image.width))
        .box_to_model([95.0, 255.0, 190.0, 350.0]);
    for nb in [1usize, 8] {
        let batch = PromptBatch {
            boxes: Some(vec![b; nb]),
            ..Default::default()
        };
        let mut dec = Vec::new();
        for _ in 0..(if nb == 1 { 40 } else { 10 }) {
            let t = Instant::now();
            let (m, i) = seg.model().decode(emb.tensor().clone(), &batch);
            let _ = (to_vec(m)?, to_vec(i)?);
            dec.push(t.elapsed().as_secs_f64());
        }
        let mut pr = Vec::new();
        let p = Prompt {
            boxes: vec![[95.0, 255.0, 190.0, 350.0]; nb],
            ..Default::default()
        };
        for _ in 0..(if nb == 1 { 20 } else { 5 }) {
            let t = Instant::now();
            let _ = seg.predict(&emb, &p)?;
            pr.push(t.elapsed().as_secs_f64());
        }
        println!(
            "boxes {nb}: decode median {:.2} ms, predict median {:.2} ms",
            median(dec) * 1e3,
            median(pr) * 1e3
        );
    }
    Ok(())
}
