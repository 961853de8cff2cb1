//! 3D segmentation from one box on a key slice, by one of two strategies behind
//! [`Segmenter::segment_volume`]: the chain rule of LiteMedSAM's official 3D script for MedSAM
//! and LiteMedSAM ([`chain`]: each slice prompted with the box of its neighbour's mask), SAM 2's
//! memory for MedSAM2 and SAM 2.1 ([`memory`]: each slice attends to the memories of the key
//! slice and the slices behind it). Both take the same [`VolumeOptions`] and give a
//! [`VolumeSegmentation`].

use crate::error::Result;
use crate::segmenter::Segmenter;
use crate::volume::Volume;

pub mod chain;
pub mod chain_tracker;
pub mod memory;
mod options;
mod request;
pub mod session;
pub mod steps;

pub use options::{drift_limit, EmptySlice, VolumeOptions, VolumeSegmentation};
pub use request::{RequestOptions, VolumeRequest};
pub use session::{Direction, SessionOptions, SlicePrediction, VolumeSession};
pub use steps::{parse_steps, SessionStep};

impl Segmenter {
    /// Segment a 3D structure from one box on a key slice: the chain rule for MedSAM and
    /// LiteMedSAM ([`chain`]), SAM 2's memory for MedSAM2 ([`memory`]).
    /// `progress(done, total)` is called after each slice.
    pub fn segment_volume(
        &self,
        vol: &Volume,
        opts: &VolumeOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<VolumeSegmentation> {
        match self.sam2() {
            Some(model) => {
                let frame = self.frame((vol.dims[1], vol.dims[2]));
                memory::segment_volume(model, frame, vol, opts, progress)
            }
            None => chain::segment_volume(self, vol, opts, progress),
        }
    }
}
