//! Benchmarks live in `benches/`; run `cargo bench -p medseg-benches`.

/// This process's peak resident memory in MB (`VmHWM` of `/proc/self/status`; 0 where that
/// file is not).
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

/// `--precision P` taken out of the command line `args` (default `f32`), for the timing
/// examples.
pub fn take_precision(args: &mut Vec<String>) -> medseg::Result<medseg::Precision> {
    match args.iter().position(|a| a == "--precision") {
        None => Ok(medseg::Precision::F32),
        Some(i) => {
            let p = args.get(i + 1).map(String::as_str).unwrap_or("").parse()?;
            args.drain(i..(i + 2).min(args.len()));
            Ok(p)
        }
    }
}
