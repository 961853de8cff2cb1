//! The `Segmenter` API: shareable between threads, embed once / prompt many, batched boxes,
//! points, mask input, and typed errors for bad prompts and images.

mod common;

use common::*;
use medseg::{io, Error, Image, ModelFamily, Prompt, Segmenter};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn segmenter_and_embedding_are_send_and_sync() {
    assert_send_sync::<Segmenter>();
    assert_send_sync::<medseg::ImageEmbedding>();
}

#[test]
fn batched_boxes_equal_single_calls_and_threads_agree() {
    let seg = std::sync::Arc::new(
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap(),
    );
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let boxes = vec![
        [95.0, 255.0, 190.0, 350.0],
        [300.0, 200.0, 420.0, 330.0],
        [10.0, 10.0, 60.0, 80.0],
    ];
    let batch = seg
        .predict(
            &emb,
            &Prompt {
                boxes: boxes.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((batch.batch, batch.masks_per_prompt), (3, 1));
    for (i, b) in boxes.iter().enumerate() {
        let one = seg.predict(&emb, &Prompt::from_box(*b)).unwrap();
        let d = max_abs_diff(one.logits(0, 0), batch.logits(i, 0));
        assert!(d <= 1e-4, "box {i}: batched logits differ by {d}");
        assert!(mask_iou(one.mask(0, 0), batch.mask(i, 0)) >= 0.999);
    }
    // The same embedding used from several threads gives the same answer.
    let handles: Vec<_> = boxes
        .iter()
        .map(|b| {
            let (seg, emb, b) = (seg.clone(), emb.clone(), *b);
            std::thread::spawn(move || seg.predict(&emb, &Prompt::from_box(b)).unwrap())
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let p = h.join().unwrap();
        assert_eq!(p.mask(0, 0), batch.mask(i, 0), "thread {i}");
    }
}

#[test]
fn eight_threads_on_different_images_match_sequential_runs() {
    let seg = std::sync::Arc::new(
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap(),
    );
    let cases: Vec<(String, [f64; 4])> = cases()
        .iter()
        .filter(|c| c["model"] == "lite-medsam")
        .map(|c| {
            let b: Vec<f64> = c["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (
                c["image"].as_str().unwrap().to_string(),
                [b[0], b[1], b[2], b[3]],
            )
        })
        .collect();
    let jobs: Vec<(String, [f64; 4])> = (0..8).map(|i| cases[i % cases.len()].clone()).collect();
    let run = |(img, b): &(String, [f64; 4])| {
        let image = io::read_png(fixtures().join(img)).unwrap();
        let p = seg.segment(&image, *b).unwrap();
        (p.masks, p.low_res_logits)
    };
    let sequential: Vec<_> = jobs.iter().map(run).collect();
    let parallel: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = jobs.iter().map(|j| s.spawn(move || run(j))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in sequential.iter().zip(&parallel).enumerate() {
        assert_eq!(
            a.0, b.0,
            "job {i}: masks differ between threads and sequential runs"
        );
        assert_eq!(a.1, b.1, "job {i}: logits differ");
    }
}

#[test]
fn points_and_mask_input_match_the_official_prompt_encoder() {
    use burn::tensor::{Tensor, TensorData};
    use medseg::model::{Points, PromptBatch};
    use medseg::segmenter::to_vec;
    let device = medseg::cpu();
    let seg = Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &device).unwrap();
    let mut g = Golden::open("golden/lite_demo_ct.npz");
    let (emb, _) = g.f32("embedding");
    let (bx, _) = g.f32("box_model");
    let (mask_in, _) = g.f32("low_res_logits");
    let mut p = Golden::open("golden/lite_prompts.npz");
    let (pts, _) = p.f32("points");
    let emb = Tensor::<4>::from_data(TensorData::new(emb, [1, 256, 64, 64]), &device);
    let cases = [
        (
            "points",
            PromptBatch {
                points: Some(Points {
                    coords: vec![[pts[0], pts[1]], [pts[2], pts[3]]],
                    labels: vec![1, 0],
                    per_prompt: 2,
                }),
                ..Default::default()
            },
        ),
        (
            "box_points_mask",
            PromptBatch {
                points: Some(Points {
                    coords: vec![[pts[2], pts[3]]],
                    labels: vec![0],
                    per_prompt: 1,
                }),
                boxes: Some(vec![[bx[0], bx[1], bx[2], bx[3]]]),
                masks: Some(Tensor::from_data(
                    TensorData::new(mask_in, [1, 1, 256, 256]),
                    &device,
                )),
            },
        ),
    ];
    for (name, batch) in cases {
        let (m, i) = seg
            .model()
            .expect("a SAM family")
            .decode(emb.clone(), &batch);
        let (m, i) = (to_vec(m).unwrap(), to_vec(i).unwrap());
        let (ref_m, _) = p.f32(&format!("{name}_logits"));
        let (ref_i, _) = p.f32(&format!("{name}_iou"));
        let dm = max_abs_diff(&m[medseg::frame::LOW_RES_LEN..], &ref_m);
        let di = max_abs_diff(&i[1..], &ref_i);
        println!("{name}: multimask logits {dm:.2e}, IoU {di:.2e}");
        assert!(dm <= 5e-3 && di <= 1e-3, "{name}: {dm} {di}");
    }
}

#[test]
fn points_and_mask_input_through_the_api() {
    let seg =
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap();
    let image = io::read_png(fixtures().join("images/demo_ct.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let first = seg
        .predict(&emb, &Prompt::from_box([95.0, 255.0, 190.0, 350.0]))
        .unwrap();
    let refine = Prompt {
        boxes: vec![[95.0, 255.0, 190.0, 350.0]],
        points: vec![([100.0, 260.0], 0)],
        mask_input: Some(first.logits(0, 0).to_vec()),
        multimask: true,
    };
    let refined = seg.predict(&emb, &refine).unwrap();
    assert_eq!((refined.batch, refined.masks_per_prompt), (1, 3));
    assert_eq!(refined.iou_predictions.len(), 3);
    let pts = Prompt {
        points: vec![([140.0, 300.0], 1)],
        ..Default::default()
    };
    assert_eq!(seg.predict(&emb, &pts).unwrap().masks.len(), 512 * 512);
}

#[test]
fn bad_prompts_and_images_get_typed_errors() {
    let seg =
        Segmenter::from_file(ModelFamily::LiteMedSam, lite_weights(), &medseg::cpu()).unwrap();
    let image = io::read_png(fixtures().join("images/mr_small.png")).unwrap();
    let emb = seg.embed(&image).unwrap();
    let p = |b: [f64; 4]| seg.predict(&emb, &Prompt::from_box(b));
    assert!(matches!(
        p([0.0, 0.0, 65.0, 10.0]),
        Err(Error::InvalidBox { .. })
    ));
    assert!(matches!(
        p([-1.0, 0.0, 5.0, 10.0]),
        Err(Error::InvalidBox { .. })
    ));
    assert!(matches!(
        p([5.0, 5.0, 5.0, 10.0]),
        Err(Error::InvalidBox { .. })
    ));
    assert!(matches!(
        p([f64::NAN, 5.0, 6.0, 10.0]),
        Err(Error::InvalidBox { .. })
    ));
    let bad_label = Prompt {
        points: vec![([3.0, 3.0], 7)],
        ..Default::default()
    };
    assert!(matches!(
        seg.predict(&emb, &bad_label),
        Err(Error::InvalidPrompt(_))
    ));
    assert!(matches!(
        seg.predict(&emb, &Prompt::default()),
        Err(Error::InvalidPrompt(_))
    ));
    let bad_mask = Prompt {
        mask_input: Some(vec![0.0; 10]),
        ..Prompt::from_box([1.0, 1.0, 9.0, 9.0])
    };
    assert!(matches!(
        seg.predict(&emb, &bad_mask),
        Err(Error::InvalidPrompt(_))
    ));
    assert!(matches!(
        Image::new(0, 5, 1, vec![]),
        Err(Error::InvalidImage(_))
    ));
    assert!(matches!(
        Image::new(2, 2, 2, vec![0; 8]),
        Err(Error::InvalidImage(_))
    ));
    assert!(matches!(
        Image::new(2, 2, 1, vec![0; 3]),
        Err(Error::InvalidImage(_))
    ));
    assert!(matches!(
        medseg::Volume::new(
            vec![1.0, f32::NAN],
            [1, 1, 2],
            [1.0; 3],
            medseg::Modality::Mr
        ),
        Err(Error::NonFiniteImage(1))
    ));
}
