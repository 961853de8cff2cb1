//! The decoder's image side, kept in an `ImageEmbedding` by its first prompt: every further
//! prompt gives what the full decoder gives, a mask input still takes the full decoder, and an
//! embedding used by another segmenter never borrows the first one's side.

mod common;

use burn::tensor::Tensor;
use common::*;
use medseg::model::{Points, PromptBatch};
use medseg::segmenter::to_vec;
use medseg::{io, Error, ModelFamily, Prompt, Segmenter};

fn lite() -> Segmenter {
    Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap()
}

/// The full decoder's low-res logits of the outputs `predict` keeps, for `batch`.
fn full_decoder(
    seg: &Segmenter,
    emb: &medseg::ImageEmbedding,
    batch: &PromptBatch,
    multi: bool,
) -> Vec<f32> {
    let (masks, _) = seg
        .model()
        .expect("a SAM family")
        .decode(emb.tensor().clone(), batch);
    let [b, n, _, _] = masks.dims();
    let (lo, hi) = if multi { (1, n) } else { (0, 1) };
    to_vec(masks.slice([0..b, lo..hi])).unwrap()
}

#[test]
fn further_prompts_give_the_full_decoders_logits() {
    let seg = lite();
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let frame = *emb.frame();
    let boxes = [
        [95.0, 255.0, 190.0, 350.0],
        [300.0, 200.0, 420.0, 330.0],
        [10.0, 10.0, 60.0, 80.0],
    ];
    let point = ([140.0, 300.0], 1);
    let cases: Vec<(&str, Prompt)> = vec![
        ("one box", Prompt::from_box(boxes[0])),
        (
            "three boxes",
            Prompt {
                boxes: boxes.to_vec(),
                ..Default::default()
            },
        ),
        (
            "a point, multimask",
            Prompt {
                points: vec![point],
                multimask: true,
                ..Default::default()
            },
        ),
        (
            "box and point",
            Prompt {
                boxes: vec![boxes[1]],
                points: vec![point],
                ..Default::default()
            },
        ),
    ];
    for (name, prompt) in &cases {
        let batch = PromptBatch {
            boxes: (!prompt.boxes.is_empty()).then(|| {
                prompt
                    .boxes
                    .iter()
                    .map(|b| frame.box_to_model(*b))
                    .collect()
            }),
            points: (!prompt.points.is_empty()).then(|| Points {
                coords: vec![frame.point_to_model(point.0); prompt.boxes.len().max(1)],
                labels: vec![1; prompt.boxes.len().max(1)],
                per_prompt: 1,
            }),
            masks: None,
        };
        let expect = full_decoder(&seg, &emb, &batch, prompt.multimask);
        // Twice: the first call makes the side, the second reuses it.
        for round in 0..2 {
            let got = seg.predict(&emb, prompt).unwrap();
            let d = max_abs_diff(&got.low_res_logits, &expect);
            let tol = if prompt.boxes.len() > 1 { 1e-4 } else { 0.0 };
            assert!(
                d <= tol,
                "{name}, call {round}: logits differ from the full decoder by {d}"
            );
        }
    }
}

#[test]
fn a_mask_input_takes_the_full_decoder() {
    let seg = lite();
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let first = seg
        .predict(&emb, &Prompt::from_box([95.0, 255.0, 190.0, 350.0]))
        .unwrap();
    let mask_input: Vec<f32> = first.logits(0, 0).to_vec();
    let prompt = Prompt {
        boxes: vec![[95.0, 255.0, 190.0, 350.0]],
        mask_input: Some(mask_input.clone()),
        ..Default::default()
    };
    let got = seg.predict(&emb, &prompt).unwrap();
    let batch = PromptBatch {
        boxes: Some(vec![emb.frame().box_to_model([95.0, 255.0, 190.0, 350.0])]),
        masks: Some(Tensor::from_data(
            burn::tensor::TensorData::new(mask_input, [1, 1, 256, 256]),
            seg.device(),
        )),
        ..Default::default()
    };
    assert_eq!(got.low_res_logits, full_decoder(&seg, &emb, &batch, false));
    // The mask input changed the answer, so the kept side (no mask input) was not used for it.
    assert!(max_abs_diff(&got.low_res_logits, &first.low_res_logits) > 1e-3);
}

#[test]
fn another_segmenter_never_uses_the_kept_side() {
    let a = lite();
    let mut sd = medseg::weights::StateDict::load(lite_weights()).unwrap();
    let name = "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.weight";
    let t = sd
        .tensors
        .get_mut(name)
        .expect("LiteMedSAM has this tensor");
    t.data.iter_mut().for_each(|v| *v *= 1.5);
    let b = Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &medseg::cpu()).unwrap();

    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = a.embed(&image).unwrap();
    let prompt = Prompt::from_box([95.0, 255.0, 190.0, 350.0]);
    let by_a = a.predict(&emb, &prompt).unwrap(); // keeps a's side in `emb`
    let by_b = b.predict(&emb, &prompt).unwrap();
    let batch = PromptBatch {
        boxes: Some(vec![emb.frame().box_to_model([95.0, 255.0, 190.0, 350.0])]),
        ..Default::default()
    };
    assert_eq!(by_b.low_res_logits, full_decoder(&b, &emb, &batch, false));
    assert!(max_abs_diff(&by_a.low_res_logits, &by_b.low_res_logits) > 1e-3);
    // And a's side is still the one kept: a's answer is unchanged.
    assert_eq!(
        a.predict(&emb, &prompt).unwrap().low_res_logits,
        by_a.low_res_logits
    );
}

#[test]
fn an_embedding_from_a_tensor_is_checked() {
    let seg = lite();
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let again = seg
        .embedding_from_tensor(emb.tensor().clone(), *emb.frame())
        .unwrap();
    let prompt = Prompt::from_box([95.0, 255.0, 190.0, 350.0]);
    assert_eq!(
        seg.predict(&again, &prompt).unwrap().masks,
        seg.predict(&emb, &prompt).unwrap().masks
    );
    let wrong = Tensor::<4>::zeros([1, 256, 32, 32], seg.device());
    match seg.embedding_from_tensor(wrong, *emb.frame()) {
        Err(Error::InvalidEmbedding(m)) => assert!(m.contains("[1, 256, 64, 64]"), "{m}"),
        other => panic!("expected InvalidEmbedding, got {other:?}"),
    }
    let medsam_frame = medseg::Frame::new(ModelFamily::MedSam, (512, 512));
    match seg.embedding_from_tensor(emb.tensor().clone(), medsam_frame) {
        Err(Error::InvalidEmbedding(m)) => assert!(m.contains("medsam"), "{m}"),
        other => panic!("expected InvalidEmbedding, got {other:?}"),
    }
}
