//! The default-weights cache: a tampered cached file is reported, never used.
//! (One test in its own binary: it sets MEDSEG_CACHE_DIR.)

use medseg::weights::lite_medsam;
use medseg::Error;

#[test]
fn tampered_cache_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("MEDSEG_CACHE_DIR", dir.path());
    assert_eq!(
        lite_medsam::cached_path(),
        dir.path().join("lite_medsam.pth")
    );
    assert!(lite_medsam::cached().unwrap().is_none());
    std::fs::write(dir.path().join("lite_medsam.pth"), b"tampered").unwrap();
    match lite_medsam::cached() {
        Err(Error::Checksum { expected, .. }) => assert_eq!(expected, lite_medsam::SHA256),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}
