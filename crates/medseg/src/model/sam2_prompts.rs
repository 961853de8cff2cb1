//! How SAM 2's predictors hand prompts to the network and logits back (`SAM2ImagePredictor`,
//! `SAM2VideoPredictor`): a box is two points labelled 2 and 3 placed before the entry's clicks,
//! an unprompted (tracked) frame gets one padding point, and the image predictor returns its
//! low-res logits clamped to ±32. One packing for the image path and the 3D propagation.

use super::prompt_encoder::{Points, PromptBatch};

/// What the image predictor clamps the returned low-res logits to (`±32`).
pub const LOGIT_CLAMP: f32 = 32.0;

/// A box as SAM 2 sends it: two points labelled 2 and 3.
pub fn box_points(b: [f32; 4]) -> Points {
    Points {
        coords: vec![[b[0], b[1]], [b[2], b[3]]],
        labels: vec![2, 3],
        per_prompt: 2,
    }
}

/// No prompt: one padding point (`_forward_sam_heads` with `point_inputs=None`), what a
/// tracked slice's heads get.
pub fn no_points() -> Points {
    Points {
        coords: vec![[0.0, 0.0]],
        labels: vec![-1],
        per_prompt: 1,
    }
}

/// A prompt batch as SAM 2 decodes it: each entry's box (if any) as its first two points,
/// then the entry's clicks; the mask inputs unchanged.
pub fn boxes_as_points(batch: &PromptBatch) -> PromptBatch {
    let Some(boxes) = &batch.boxes else {
        return batch.clone();
    };
    let (clicks, labels, n) = match &batch.points {
        Some(p) => (p.coords.as_slice(), p.labels.as_slice(), p.per_prompt),
        None => (&[][..], &[][..], 0),
    };
    let mut points = Points {
        coords: Vec::new(),
        labels: Vec::new(),
        per_prompt: n + 2,
    };
    for (i, b) in boxes.iter().enumerate() {
        let packed = box_points(*b);
        points.coords.extend(packed.coords);
        points.labels.extend(packed.labels);
        points.coords.extend_from_slice(&clicks[i * n..(i + 1) * n]);
        points.labels.extend_from_slice(&labels[i * n..(i + 1) * n]);
    }
    PromptBatch {
        points: Some(points),
        boxes: None,
        masks: batch.masks.clone(),
    }
}

/// The image predictor's returned logits: clamped to ±[`LOGIT_CLAMP`] (its masks come from
/// the unclamped ones).
pub fn clamp_logits(logits: Vec<f32>) -> Vec<f32> {
    logits
        .into_iter()
        .map(|v| v.clamp(-LOGIT_CLAMP, LOGIT_CLAMP))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_come_first_as_points_2_and_3_then_the_clicks() {
        let batch = PromptBatch {
            boxes: Some(vec![[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
            points: Some(Points {
                coords: vec![[9.0, 9.0], [8.0, 8.0]],
                labels: vec![1, 0],
                per_prompt: 1,
            }),
            masks: None,
        };
        let p = boxes_as_points(&batch).points.unwrap();
        assert_eq!(p.per_prompt, 3);
        assert_eq!(p.labels, [2, 3, 1, 2, 3, 0]);
        assert_eq!(p.coords[..3], [[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]);
        assert_eq!(p.coords[3..], [[5.0, 6.0], [7.0, 8.0], [8.0, 8.0]]);
        assert_eq!(clamp_logits(vec![-40.0, 0.5, 33.0]), [-32.0, 0.5, 32.0]);
    }
}
