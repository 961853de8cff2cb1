//! Checkpoint reading and validation: the real LiteMedSAM file, format round trips, and
//! each kind of bad checkpoint refused with an error that names the problem.

mod common;

use common::*;
use medseg::weights::{RawTensor, StateDict};
use medseg::{Error, ModelFamily, Segmenter};

fn lite() -> StateDict {
    StateDict::load(lite_weights()).expect("lite_medsam.pth reads")
}

fn refused(sd: &StateDict, family: ModelFamily) -> String {
    match Segmenter::from_state_dict(family, sd, &medseg::cpu()) {
        Ok(_) => panic!("checkpoint should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn official_lite_checkpoint_reads_as_documented() {
    let sd = lite();
    assert_eq!(sd.tensors.len(), 435);
    assert_eq!(sd.tensors.values().filter(|t| t.is_float).count(), 408);
    assert_eq!(ModelFamily::detect(&sd), Some(ModelFamily::LiteMedSam));
    let t = &sd.tensors["image_encoder.layers.1.blocks.0.attn.attention_biases"];
    assert_eq!(t.shape, vec![4, 49]);
}

#[test]
fn safetensors_round_trip_is_exact() {
    let sd = lite();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lite.safetensors");
    sd.save_safetensors(&p).unwrap();
    let back = StateDict::load(&p).unwrap();
    assert_eq!(back.tensors, sd.tensors);
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let mut sd = lite();
    sd.tensors.remove("mask_decoder.iou_token.weight");
    let msg = refused(&sd, ModelFamily::LiteMedSam);
    assert!(
        msg.contains("missing") && msg.contains("mask_decoder.iou_token.weight"),
        "{msg}"
    );

    let mut sd = lite();
    sd.tensors.insert(
        "extra.weight".into(),
        RawTensor::new(vec![2], vec![0.0, 1.0]),
    );
    let msg = refused(&sd, ModelFamily::LiteMedSam);
    assert!(
        msg.contains("unexpected") && msg.contains("extra.weight"),
        "{msg}"
    );

    let mut sd = lite();
    let t = sd
        .tensors
        .get_mut("prompt_encoder.no_mask_embed.weight")
        .unwrap();
    t.shape = vec![256, 1];
    let msg = refused(&sd, ModelFamily::LiteMedSam);
    assert!(
        msg.contains("mis-shaped") && msg.contains("no_mask_embed"),
        "{msg}"
    );
}

#[test]
fn the_other_family_is_refused() {
    let msg = refused(&lite(), ModelFamily::MedSam);
    assert!(
        msg.contains("lite-medsam checkpoint, not a medsam"),
        "{msg}"
    );
    let msg = refused(&random_vit_b_state_dict(), ModelFamily::LiteMedSam);
    assert!(
        msg.contains("medsam checkpoint, not a lite-medsam"),
        "{msg}"
    );
}

#[test]
fn non_finite_weights_are_refused() {
    let mut sd = lite();
    sd.tensors
        .get_mut("mask_decoder.mask_tokens.weight")
        .unwrap()
        .data[3] = f32::NAN;
    match Segmenter::from_state_dict(ModelFamily::LiteMedSam, &sd, &medseg::cpu()) {
        Err(Error::NonFiniteWeights { name, count }) => {
            assert_eq!(
                (name.as_str(), count),
                ("mask_decoder.mask_tokens.weight", 1)
            )
        }
        other => panic!("expected NonFiniteWeights, got {other:?}"),
    }
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(lite_weights()).unwrap();
    let cut = dir.path().join("truncated.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        StateDict::load(&cut),
        Err(Error::Checkpoint { .. })
    ));
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"this is not a checkpoint at all").unwrap();
    assert!(matches!(
        StateDict::load(&junk),
        Err(Error::Checkpoint { .. })
    ));
    let missing = dir.path().join("absent.pth");
    assert!(matches!(StateDict::load(&missing), Err(Error::Io { .. })));
    let png = fixtures().join("images/demo_ct.png");
    assert!(matches!(
        StateDict::load(&png),
        Err(Error::Checkpoint { .. })
    ));
}
