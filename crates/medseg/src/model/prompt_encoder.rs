//! SAM's `PromptEncoder`: points, boxes and a low-res mask → sparse and dense embeddings,
//! with the random-Fourier positional encoding (`PositionEmbeddingRandom`).

use burn::tensor::{Int, Tensor, TensorData};

use super::common::{Conv2d, LayerNorm2d, Loader};
use super::kernels::Kernels;

/// Points of a batch: `per_prompt` points for each of the `B` entries.
#[derive(Debug, Clone, Default)]
pub struct Points {
    /// `[B, per_prompt]` coordinates (x, y) in the model frame.
    pub coords: Vec<[f32; 2]>,
    /// `[B, per_prompt]` labels: 1 foreground, 0 background, -1 padding; 2 and 3 a box's
    /// top-left and bottom-right corners (SAM 2 sends boxes this way).
    pub labels: Vec<i64>,
    /// Points per batch entry.
    pub per_prompt: usize,
}

/// Prompts for a batch of `B` decoder runs on one image embedding. Coordinates are in the
/// model's input frame (1024² for MedSAM, 256² for LiteMedSAM).
#[derive(Debug, Clone, Default)]
pub struct PromptBatch {
    /// Points with labels.
    pub points: Option<Points>,
    /// `[B, 4]` boxes `x0, y0, x1, y1`.
    pub boxes: Option<Vec<[f32; 4]>>,
    /// `[B, 1, 256, 256]` low-res mask logits.
    pub masks: Option<Tensor<4>>,
}

impl PromptBatch {
    /// `B`, from whichever prompt is present (1 with none).
    pub fn batch_size(&self) -> usize {
        if let Some(p) = &self.points {
            p.labels.len() / p.per_prompt.max(1)
        } else if let Some(b) = &self.boxes {
            b.len()
        } else if let Some(m) = &self.masks {
            m.dims()[0]
        } else {
            1
        }
    }
}

/// SAM's `PromptEncoder`.
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    /// `[2, embed_dim / 2]`
    gaussian: Tensor<2>,
    /// Rows: not-a-point, point 0 (bg), point 1 (fg), box corner 0, box corner 1. `[5, C]`
    point_table: Tensor<2>,
    /// `[1, C, h, w]`: `no_mask_embed` repeated over the grid.
    no_mask_embed: Tensor<4>,
    mask_downscaling: MaskDownscaling,
    /// `[1, C, h, w]`, `get_dense_pe()`, computed once.
    dense_pe: Tensor<4>,
    /// Embedding width (256).
    pub embed_dim: usize,
    /// Model input frame `(h, w)`: 1024² for MedSAM, 256² for LiteMedSAM.
    pub input_image_size: (usize, usize),
    /// Grid of the image embedding (64 × 64).
    pub embedding_size: (usize, usize),
}

impl PromptEncoder {
    /// The prompt encoder under `p`: `embed_dim` wide, over an `embedding_size` grid, for inputs of `input_image_size`, with `mask_in_chans` (16) in the mask downscaling.
    pub fn load(
        l: &mut Loader,
        p: &str,
        embed_dim: usize,
        embedding_size: (usize, usize),
        input_image_size: (usize, usize),
        mask_in_chans: usize,
    ) -> Self {
        let c = embed_dim;
        let gaussian = l.tensor(
            &format!("{p}.pe_layer.positional_encoding_gaussian_matrix"),
            [2, c / 2],
        );
        let mut rows = l.values(&format!("{p}.not_a_point_embed.weight"), &[1, c]);
        for i in 0..4 {
            rows.extend(l.values(&format!("{p}.point_embeddings.{i}.weight"), &[1, c]));
        }
        let point_table = l.from_vec(rows, [5, c]);
        let md = format!("{p}.mask_downscaling");
        let mask_downscaling = MaskDownscaling::load(l, &md, mask_in_chans, c);
        let (h, w) = embedding_size;
        // `no_mask_embed` broadcast over the embedding grid, stored dense: adding a stride-0
        // view to the image embedding took flex's slow strided path on every decode.
        let nm = l.values(&format!("{p}.no_mask_embed.weight"), &[1, c]);
        let dense: Vec<f32> = nm
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, h * w))
            .collect();
        let no_mask_embed = l.from_vec(dense, [1, c, h, w]);
        // Grid of pixel centres: x = (j + 0.5) / w, y = (i + 0.5) / h, stacked [x, y].
        let mut grid = Vec::with_capacity(h * w * 2);
        for i in 0..h {
            for j in 0..w {
                grid.push((j as f32 + 1.0 - 0.5) / w as f32);
                grid.push((i as f32 + 1.0 - 0.5) / h as f32);
            }
        }
        let grid = l.from_vec(grid, [1, h * w, 2]);
        let dense_pe = pe_encoding(grid, &gaussian) // [1, h*w, C]
            .swap_dims(1, 2)
            .reshape([1, c, h, w]);
        Self {
            gaussian,
            point_table,
            no_mask_embed,
            mask_downscaling,
            dense_pe,
            embed_dim: c,
            input_image_size,
            embedding_size,
        }
    }

    /// `get_dense_pe()`: `[1, C, h, w]`.
    pub fn dense_pe(&self) -> Tensor<4> {
        self.dense_pe.clone()
    }

    /// The dense embedding of "no mask input", `[1, C, h, w]`.
    pub fn no_mask_dense(&self) -> Tensor<4> {
        self.no_mask_embed.clone()
    }

    /// Coordinates `[B, N, 2]` in the input frame → `[B, N, C]` (after the +0.5 shift).
    fn embed_coords(&self, coords: Vec<f32>, b: usize, n: usize) -> Tensor<3> {
        let (ih, iw) = self.input_image_size;
        let norm: Vec<f32> = coords
            .chunks_exact(2)
            .flat_map(|c| [(c[0] + 0.5) / iw as f32, (c[1] + 0.5) / ih as f32])
            .collect();
        let device = self.gaussian.device();
        let t = Tensor::<3>::from_data(TensorData::new(norm, [b, n, 2]), &device);
        pe_encoding(t, &self.gaussian)
    }

    /// Rows of `point_table` by index, `[B, N, C]`.
    fn table_rows(&self, idx: Vec<i64>, b: usize, n: usize) -> Tensor<3> {
        let device = self.gaussian.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b * n]), &device);
        self.point_table
            .clone()
            .select(0, idx)
            .reshape([b, n, self.embed_dim])
    }

    /// → sparse `[B, Nt, C]` and dense `[B, C, h, w]` embeddings.
    pub fn forward(&self, prompts: &PromptBatch) -> (Tensor<3>, Tensor<4>) {
        let bs = prompts.batch_size();
        let c = self.embed_dim;
        let mut parts: Vec<Tensor<3>> = Vec::new();
        if let Some(points) = &prompts.points {
            parts.push(self.embed_points(points, bs, prompts.boxes.is_none()));
        }
        if let Some(boxes) = &prompts.boxes {
            let coords: Vec<f32> = boxes.iter().flat_map(|b| *b).collect();
            let pe = self.embed_coords(coords, bs, 2);
            let idx: Vec<i64> = (0..bs).flat_map(|_| [3, 4]).collect();
            parts.push(pe + self.table_rows(idx, bs, 2));
        }
        let sparse = if parts.is_empty() {
            Tensor::zeros([bs, 0, c], &self.gaussian.device())
        } else {
            Tensor::cat(parts, 1)
        };
        let (h, w) = self.embedding_size;
        let dense = match &prompts.masks {
            Some(m) => self.mask_downscaling.forward(m.clone()),
            None if bs == 1 => self.no_mask_embed.clone(),
            None => self.no_mask_embed.clone().expand([bs, c, h, w]),
        };
        (sparse, dense)
    }

    /// `_embed_points`: `[B, N, C]`, with one "not a point" appended to each entry when no
    /// box follows (`pad`).
    fn embed_points(&self, points: &Points, bs: usize, pad: bool) -> Tensor<3> {
        let n = points.per_prompt;
        let mut coords: Vec<f32> = Vec::with_capacity(bs * (n + 1) * 2);
        let mut labels = Vec::with_capacity(bs * (n + 1));
        for bi in 0..bs {
            coords.extend(points.coords[bi * n..(bi + 1) * n].iter().flatten());
            labels.extend_from_slice(&points.labels[bi * n..(bi + 1) * n]);
            if pad {
                coords.extend_from_slice(&[-0.5, -0.5]); // +0.5 → the zero point upstream pads
                labels.push(-1);
            }
        }
        let n = n + usize::from(pad);
        let pe = self.embed_coords(coords, bs, n);
        let keep: Vec<f32> = labels.iter().map(|&l| f32::from(l != -1)).collect();
        let keep = Tensor::<3>::from_data(TensorData::new(keep, [bs, n, 1]), &pe.device());
        let idx: Vec<i64> = labels
            .iter()
            .map(|&l| match l {
                -1 => 0,
                0 => 1,
                2 => 3, // SAM 2 sends a box as two points labelled 2 and 3
                3 => 4,
                _ => 2,
            })
            .collect();
        pe * keep + self.table_rows(idx, bs, n)
    }
}

/// `mask_downscaling`: a `[B, 1, 256, 256]` mask prompt → `[B, C, 64, 64]`.
#[derive(Debug, Clone)]
struct MaskDownscaling {
    conv1: Conv2d,
    norm1: LayerNorm2d,
    conv2: Conv2d,
    norm2: LayerNorm2d,
    conv3: Conv2d,
    kernels: Kernels,
}

impl MaskDownscaling {
    fn load(l: &mut Loader, p: &str, mask_in_chans: usize, c: usize) -> Self {
        let q = mask_in_chans / 4;
        Self {
            conv1: Conv2d::load(l, &format!("{p}.0"), 1, q, 2, 2, 0, true),
            norm1: LayerNorm2d::load(l, &format!("{p}.1"), q),
            conv2: Conv2d::load(l, &format!("{p}.3"), q, mask_in_chans, 2, 2, 0, true),
            norm2: LayerNorm2d::load(l, &format!("{p}.4"), mask_in_chans),
            conv3: Conv2d::load(l, &format!("{p}.6"), mask_in_chans, c, 1, 1, 0, true),
            kernels: l.kernels,
        }
    }

    fn forward(&self, m: Tensor<4>) -> Tensor<4> {
        let x = self.kernels.gelu(self.norm1.forward(self.conv1.forward(m)));
        let x = self.kernels.gelu(self.norm2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// `_pe_encoding`: coords in [0, 1] → `[sin, cos](2π (2c − 1) G)`. `[B, N, 2]` → `[B, N, C]`.
fn pe_encoding(coords: Tensor<3>, gaussian: &Tensor<2>) -> Tensor<3> {
    let b = coords.dims()[0];
    let g = gaussian
        .clone()
        .unsqueeze::<3>()
        .expand([b, 2, gaussian.dims()[1]]);
    let x = (coords * 2.0 - 1.0).matmul(g) * (2.0 * std::f64::consts::PI);
    Tensor::cat(vec![x.clone().sin(), x.cos()], 2)
}
