//! Benchmarks live in `benches/`; run `cargo bench -p medseg-benches`.
