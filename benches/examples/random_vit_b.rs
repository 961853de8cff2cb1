//! Write SAM ViT-B weights drawn by the parity tests' seeded generator (same names, shapes and
//! cost as `medsam_vit_b.pth`, no medical meaning) to a `.safetensors` file, so that the CLI's
//! end-to-end time and memory can be measured without the real checkpoint:
//! `cargo run --release -p medseg-benches --example random_vit_b -- /tmp/vit_b_random.safetensors`
//! then `medseg segment --model medsam --weights /tmp/vit_b_random.safetensors ...`.

use medseg::testing::{parse_layout, seeded_random_state_dict};

fn main() -> medseg::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "vit_b_random.safetensors".into());
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let layout_path = root.join("tests/fixtures/golden/vit_b_layout.txt");
    let layout = std::fs::read_to_string(&layout_path).map_err(|e| medseg::Error::Io {
        path: layout_path,
        source: e,
    })?;
    seeded_random_state_dict(&parse_layout(&layout), 2024).save_safetensors(&out)?;
    println!("{out}");
    Ok(())
}
