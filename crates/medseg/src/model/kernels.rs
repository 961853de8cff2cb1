//! Which implementation the model's elementwise and layout operations take, decided once when a
//! model is built on a device ([`Kernels::for_device`], kept by the [`super::common::Loader`])
//! and carried by every layer that has a choice, so that each call site names its path:
//! `self.kernels.add(shortcut, x)`.
//!
//! * [`Kernels::Host`], the CPU backend (`Device::flex()`): medseg's kernels in
//!   `model::host` on the tensor's own `f32` buffer (in place when it is contiguous and not
//!   shared), multithreaded and vectorised where Burn's flex runs one element at a time.
//! * [`Kernels::Burn`], every other device (wgpu): Burn's tensor operations.
//!
//! Both give the same numbers to float rounding (the parity tests run both). The model builds
//! only `f32` tensors; a tensor of another element type reaching a host kernel (it cannot come
//! from medseg's own code) takes Burn's operation, the stated branch in `host_in_place`.

use burn::tensor::activation;
use burn::tensor::{DType, Device, Tensor, TensorData};

/// Where the model's elementwise and layout operations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// medseg's CPU kernels on the host buffer.
    Host,
    /// Burn's operations on the device.
    Burn,
}

impl Kernels {
    /// Host kernels on the CPU backend, Burn's operations elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if *device == Device::flex() {
            Kernels::Host
        } else {
            Kernels::Burn
        }
    }

    /// Exact (erf) GELU, as PyTorch's `nn.GELU()`.
    pub fn gelu<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Kernels::Host => host_in_place(x, activation::gelu, super::host::gelu),
            Kernels::Burn => activation::gelu(x),
        }
    }

    /// `x + y` (same shape); on the host, in place in `x`'s buffer.
    pub fn add<const D: usize>(self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        match self {
            Kernels::Host => host_binary(x, y, |x, y| x + y, super::host::add),
            Kernels::Burn => x + y,
        }
    }

    /// `gelu(x + y)`; on the host, in one pass.
    pub fn add_gelu<const D: usize>(self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        let burn = |x: Tensor<D>, y| activation::gelu(x + y);
        match self {
            Kernels::Host => host_binary(x, y, burn, super::host::add_gelu),
            Kernels::Burn => burn(x, y),
        }
    }

    /// Softmax over the last dimension.
    pub fn softmax_last<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        let row = x.dims()[D - 1];
        match self {
            Kernels::Host => host_in_place(
                x,
                |x| activation::softmax(x, D - 1),
                |v| super::host::softmax_rows(v, row),
            ),
            Kernels::Burn => activation::softmax(x, D - 1),
        }
    }

    /// `[B, R, C]` → `[B, C, R]` as a contiguous tensor: on the host one tiled, parallel copy
    /// (flex's strided copy of a `swap_dims` view was a tenth of the decoder's time).
    pub fn transpose12(self, x: Tensor<3>) -> Tensor<3> {
        let [b, r, c] = x.dims();
        match self {
            Kernels::Host => host_to_new(
                x,
                |x| x.swap_dims(1, 2),
                |src| (super::host::transpose(src, b, r, c), [b, c, r]),
            ),
            Kernels::Burn => x.swap_dims(1, 2),
        }
    }
}

/// Run `host` on the tensor's `f32` values in place (the buffer moves out and back without a
/// copy when the tensor is contiguous and not shared). A tensor that is not `f32` takes
/// `burn_op` instead.
pub(super) fn host_in_place<const D: usize>(
    x: Tensor<D>,
    burn_op: impl FnOnce(Tensor<D>) -> Tensor<D>,
    host: impl FnOnce(&mut [f32]),
) -> Tensor<D> {
    if x.dtype() != DType::F32 {
        return burn_op(x);
    }
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            host(values);
            Tensor::from_data(data, &device)
        }
        Err(_) => burn_op(Tensor::from_data(data, &device)),
    }
}

/// Like [`host_in_place`] for kernels that write a new buffer: `host` reads the `f32` values
/// and returns the result with its shape.
pub(super) fn host_to_new<const D: usize, const E: usize>(
    x: Tensor<D>,
    burn_op: impl FnOnce(Tensor<D>) -> Tensor<E>,
    host: impl FnOnce(&[f32]) -> (Vec<f32>, [usize; E]),
) -> Tensor<E> {
    if x.dtype() != DType::F32 {
        return burn_op(x);
    }
    let device = x.device();
    let data = x.into_data();
    match data.as_slice::<f32>() {
        Ok(values) => {
            let (out, shape) = host(values);
            Tensor::from_data(TensorData::new(out, shape), &device)
        }
        Err(_) => burn_op(Tensor::from_data(data, &device)),
    }
}

/// [`host_in_place`] for `x ← f(x, y)` with `y` read only (same shape; a broadcast `y` takes
/// `burn_op`).
fn host_binary<const D: usize>(
    x: Tensor<D>,
    y: Tensor<D>,
    burn_op: impl Fn(Tensor<D>, Tensor<D>) -> Tensor<D>,
    host: fn(&mut [f32], &[f32]),
) -> Tensor<D> {
    if x.dims() != y.dims() || y.dtype() != DType::F32 {
        return burn_op(x, y);
    }
    let device = y.device();
    let y = y.into_data();
    match y.as_slice::<f32>() {
        Ok(ys) => host_in_place(
            x,
            |x| burn_op(x, Tensor::from_data(y.clone(), &device)),
            |xs| host(xs, ys),
        ),
        Err(_) => burn_op(x, Tensor::from_data(y, &device)),
    }
}
