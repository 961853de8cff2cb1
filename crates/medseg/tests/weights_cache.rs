//! The default-weights cache: a tampered cached file is reported, never used; an empty
//! cache is an error that says how to fill it, and building a model never fetches.
//! (One test in its own binary: it sets MEDSEG_CACHE_DIR.)

use medseg::weights::lite_medsam;
use medseg::{Error, ModelFamily, Segmenter};

#[test]
fn tampered_cache_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("MEDSEG_CACHE_DIR", dir.path());
    assert_eq!(
        lite_medsam::cached_path(),
        dir.path().join("lite_medsam.pth")
    );
    assert!(lite_medsam::cached().unwrap().is_none());
    // No python on the PATH either: a constructor that tried to download would fail on that,
    // and it must not try.
    std::env::set_var("MEDSEG_PYTHON", "/nonexistent/python3");
    for built in [
        Segmenter::new(ModelFamily::LiteMedSam, None, &medseg::cpu()),
        Segmenter::from_default_weights(ModelFamily::LiteMedSam, &medseg::cpu()),
    ] {
        match built {
            Err(Error::WeightsUnavailable(m)) => {
                assert!(m.contains("not in the cache"), "{m}");
                assert!(m.contains("medseg fetch-weights"), "{m}");
                assert!(!m.contains("pip"), "a constructor ran pip: {m}");
            }
            other => panic!("expected WeightsUnavailable, got {:?}", other.err()),
        }
    }
    assert!(!dir.path().join("lite_medsam.pth").exists());
    std::fs::write(dir.path().join("lite_medsam.pth"), b"tampered").unwrap();
    match lite_medsam::cached() {
        Err(Error::Checksum { expected, .. }) => assert_eq!(expected, lite_medsam::SHA256),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}
