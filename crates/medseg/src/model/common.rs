//! Layers shared by the SAM parts, and the loader that fills them from a state_dict.
//! No I/O here: the state_dict is already in memory (`crate::weights`).

use std::collections::BTreeSet;
use std::sync::Arc;

use burn::tensor::module::{conv2d, conv_transpose2d, layer_norm, linear};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Tensor, TensorData};

use super::attention::{self, Bias, Heads, Products, RelPos};
use super::bf16;
use super::kernels::{host_in_place, host_to_new, Kernels};
use crate::error::{Error, Result};
use crate::weights::StateDict;

/// Read a tensor back to the host.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| Error::Backend(format!("{e:?}")))
}

/// Takes tensors out of a state_dict by name and shape, and remembers what was missing,
/// mis-shaped or left over, so that one error can name them all.
pub struct Loader<'a> {
    sd: &'a StateDict,
    /// Where the tensors are made.
    pub device: Device,
    /// The kernels every layer of this model takes on `device`.
    pub kernels: Kernels,
    used: BTreeSet<String>,
    missing: Vec<String>,
    misshaped: Vec<String>,
}

impl<'a> Loader<'a> {
    /// A loader over `sd` making tensors on `device`.
    pub fn new(sd: &'a StateDict, device: &Device) -> Self {
        Self {
            sd,
            device: device.clone(),
            kernels: Kernels::for_device(device),
            used: BTreeSet::new(),
            missing: Vec::new(),
            misshaped: Vec::new(),
        }
    }

    /// The values of `name`, which must have `shape`; zeros (and a recorded error) otherwise.
    pub fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match self.sd.tensors.get(name) {
            None => {
                self.missing.push(format!("{name} {shape:?}"));
                vec![0.0; n]
            }
            Some(t) => {
                self.used.insert(name.to_string());
                if t.shape != shape {
                    self.misshaped
                        .push(format!("{name}: expected {shape:?}, found {:?}", t.shape));
                    vec![0.0; n]
                } else {
                    t.data.clone()
                }
            }
        }
    }

    /// Mark an optional entry (e.g. BatchNorm's `num_batches_tracked`) as known.
    pub fn skip(&mut self, name: &str) {
        if self.sd.tensors.contains_key(name) {
            self.used.insert(name.to_string());
        }
    }

    /// Tensor `name` of `shape` on the device (zeros and a recorded error if absent or mis-shaped).
    pub fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Tensor<D> {
        let v = self.values(name, &shape);
        self.from_vec(v, shape)
    }

    /// A tensor of `shape` from host values.
    pub fn from_vec<const D: usize>(&self, v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(v, shape), &self.device)
    }

    /// Report everything that did not fit: missing, mis-shaped and unexpected tensors.
    pub fn finish(self, model: &str) -> Result<()> {
        let unexpected: Vec<&String> = self
            .sd
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .collect();
        if self.missing.is_empty() && self.misshaped.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(8).map(|s| s.as_str()).collect();
            let more = v.len().saturating_sub(8);
            if more > 0 {
                format!("{} (and {more} more)", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing tensors: {}",
                self.missing.len(),
                list(&self.missing)
            ));
        }
        if !self.misshaped.is_empty() {
            parts.push(format!(
                "{} mis-shaped tensors: {}",
                self.misshaped.len(),
                list(&self.misshaped)
            ));
        }
        if !unexpected.is_empty() {
            let u: Vec<String> = unexpected.into_iter().cloned().collect();
            parts.push(format!("{} unexpected tensors: {}", u.len(), list(&u)));
        }
        Err(Error::WeightsMismatch {
            model: model.to_string(),
            details: parts.join("; "),
        })
    }
}

/// `nn.Linear`; the weight is stored as `[in, out]` (PyTorch's transposed).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Tensor<2>,
    /// `[out]`.
    pub bias: Option<Tensor<1>>,
    /// Under `Precision::Bf16` (CPU backend, AVX-512 BF16): the weight packed in bf16 and the
    /// bias on the host; `forward` then takes [`bf16::matmul`]. Shared by clones.
    bf16: Option<Arc<Bf16Weight>>,
}

/// A [`Linear`]'s weight for the bf16 kernel.
#[derive(Debug)]
struct Bf16Weight {
    packed: bf16::PackedB,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// `{prefix}.weight` `[d_out, d_in]` and, with `bias`, `{prefix}.bias`.
    pub fn load(l: &mut Loader, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Self {
        let w = l.values(&format!("{prefix}.weight"), &[d_out, d_in]);
        let mut t = vec![0.0; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        let weight = l.from_vec(t, [d_in, d_out]);
        let bias = bias.then(|| l.tensor(&format!("{prefix}.bias"), [d_out]));
        Self {
            weight,
            bias,
            bf16: None,
        }
    }

    /// Switch the bf16 kernel on (packing the `f32` weight, which stays for switching back) or
    /// off. The caller has checked [`bf16::supported`] and that the weight is on the CPU
    /// backend; a weight that cannot be read on the host leaves the layer in `f32`.
    pub fn set_bf16(&mut self, on: bool) {
        self.bf16 = None;
        if !on {
            return;
        }
        let [k, n] = self.weight.dims();
        let Ok(w) = self.weight.to_data().try_to_vec::<f32>() else {
            return;
        };
        let bias = match &self.bias {
            Some(b) => match b.to_data().try_to_vec::<f32>() {
                Ok(b) => Some(b),
                Err(_) => return,
            },
            None => None,
        };
        self.bf16 = Some(Arc::new(Bf16Weight {
            packed: bf16::PackedB::new(&w, k, n),
            bias,
        }));
    }

    /// Whether `forward` takes the bf16 kernel.
    pub fn is_bf16(&self) -> bool {
        self.bf16.is_some()
    }

    /// The arithmetic of the attention this layer projects for: bf16 products where the layer
    /// itself runs in bf16.
    pub fn products(&self) -> Products {
        if self.is_bf16() {
            Products::Bf16
        } else {
            Products::F32
        }
    }

    /// `x · W + b` over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.bf16 {
            Some(w) => self.forward_bf16(w, x),
            None => linear(x, self.weight.clone(), self.bias.clone()),
        }
    }

    /// The bf16 kernel on `x`'s host values (a tensor that is not `f32` takes Burn's `f32`
    /// product, as every host kernel does).
    fn forward_bf16<const D: usize>(&self, w: &Bf16Weight, x: Tensor<D>) -> Tensor<D> {
        let (k, n) = w.packed.dims();
        let mut shape = x.dims();
        shape[D - 1] = n;
        let rows = x.dims()[..D - 1].iter().product();
        host_to_new(
            x,
            |x| linear(x, self.weight.clone(), self.bias.clone()),
            |a| {
                debug_assert_eq!(a.len(), rows * k);
                (bf16::matmul(a, rows, &w.packed, w.bias.as_deref()), shape)
            },
        )
    }
}

/// The bias [`host_attention`] adds to the scores.
#[derive(Debug, Clone)]
pub enum HostBias<'a> {
    /// No bias.
    None,
    /// SAM's relative-position terms `[B, H, N, kh]`, `[B, H, N, kw]` over a `kh × kw` key grid.
    Rel(Box<(Tensor<4>, Tensor<4>, (usize, usize))>),
    /// One `[N, M]` table per head, `[H, N, M]` on the host, shared by the batch (windows).
    Table(&'a [f32]),
}

/// `softmax(q·kᵀ + bias) · v` on the host ([`attention::attention`]): `q` `[B, H, N, d]`
/// (already scaled), `k` `[B, H, M, d]`, `v` `[B, H, M, dv]` → `[B, H, N, dv]`. For `f32`
/// tensors on the CPU backend (`Kernels::Host`); callers check the element type.
pub fn host_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: HostBias,
    products: Products,
) -> Tensor<4> {
    let ([b, h, n, d], [.., m, dv]) = (q.dims(), v.dims());
    let device = q.device();
    let host = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap_or_default();
    let (q, k, v) = (host(q), host(k), host(v));
    let (rel, table) = match bias {
        HostBias::None => (None, None),
        HostBias::Rel(rel) => {
            let (rh, rw, grid) = *rel;
            (Some((host(rh), host(rw), grid)), None)
        }
        HostBias::Table(values) => (None, Some(values)),
    };
    let bias = match (&rel, table) {
        (_, Some(values)) => Some(Bias::Table { values, tables: h }),
        (Some((rh, rw, (kh, kw))), None) => Some(Bias::Rel(RelPos {
            h: rh,
            w: rw,
            kh: *kh,
            kw: *kw,
        })),
        (None, None) => None,
    };
    let heads = Heads {
        heads: b * h,
        queries: n,
        keys: m,
        d,
        dv,
    };
    let out = attention::attention(&q, &k, &v, heads, bias, products);
    Tensor::from_data(TensorData::new(out, [b, h, n, dv]), &device)
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale, `[dim]`.
    pub gamma: Tensor<1>,
    /// Shift, `[dim]`.
    pub beta: Tensor<1>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// `{prefix}.weight` and `{prefix}.bias`, both `[dim]`.
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, eps: f64) -> Self {
        Self {
            gamma: l.tensor(&format!("{prefix}.weight"), [dim]),
            beta: l.tensor(&format!("{prefix}.bias"), [dim]),
            eps,
        }
    }

    /// Normalise the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps)
    }
}

/// SAM's `LayerNorm2d`: normalises the channels of `[B, C, H, W]` (eps 1e-6).
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    /// Scale, `[1, C, 1, 1]`.
    pub weight: Tensor<4>,
    /// Shift, `[1, C, 1, 1]`.
    pub bias: Tensor<4>,
    /// Added to the variance (1e-6).
    pub eps: f64,
    /// [`Kernels::Host`]: the same weight and bias on the host, for the in-place kernel.
    host: Option<(Vec<f32>, Vec<f32>)>,
}

impl LayerNorm2d {
    /// `{prefix}.weight` and `{prefix}.bias`, both `[c]`.
    pub fn load(l: &mut Loader, prefix: &str, c: usize) -> Self {
        let w = l.values(&format!("{prefix}.weight"), &[c]);
        let b = l.values(&format!("{prefix}.bias"), &[c]);
        let host = (l.kernels == Kernels::Host).then(|| (w.clone(), b.clone()));
        Self {
            weight: l.from_vec(w, [c]).reshape([1, c, 1, 1]),
            bias: l.from_vec(b, [c]).reshape([1, c, 1, 1]),
            eps: 1e-6,
            host,
        }
    }

    /// Normalise the channels of `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let Some((w, b)) = &self.host else {
            return self.forward_tensor(x);
        };
        let [_, c, h, wd] = x.dims();
        let eps = self.eps as f32;
        host_in_place(
            x,
            |x| self.forward_tensor(x),
            |xs| super::host::layer_norm_channels(xs, c, h * wd, w, b, eps),
        )
    }

    fn forward_tensor(&self, x: Tensor<4>) -> Tensor<4> {
        let u = x.clone().mean_dim(1);
        let d = x - u;
        let s = d.clone().square().mean_dim(1);
        let x = d / (s + self.eps).sqrt();
        x * self.weight.clone() + self.bias.clone()
    }
}

/// `nn.Conv2d` (square kernel).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[c_out, c_in / groups, k, k]`.
    pub weight: Tensor<4>,
    /// `[c_out]`.
    pub bias: Option<Tensor<1>>,
    /// Same in both directions.
    pub stride: usize,
    /// Zeros on every side.
    pub padding: usize,
    /// Channel groups (1: a full convolution).
    pub groups: usize,
    /// [`Kernels::Host`], depthwise 3×3 with padding 1: the taps and bias on the host for
    /// [`super::host::depthwise3x3`] (flex's grouped convolution was ~5× slower).
    host_depthwise: Option<(Vec<f32>, Vec<f32>)>,
}

impl Conv2d {
    /// `{prefix}.weight` `[c_out, c_in, k, k]` and, with `bias`, `{prefix}.bias`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &mut Loader,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Self {
        Self {
            weight: l.tensor(&format!("{prefix}.weight"), [c_out, c_in, k, k]),
            bias: bias.then(|| l.tensor(&format!("{prefix}.bias"), [c_out])),
            stride,
            padding,
            groups: 1,
            host_depthwise: None,
        }
    }

    /// A depthwise convolution of `c` channels (`groups = c`), stride 1, `k × k` with
    /// `padding`: `{prefix}.weight` `[c, 1, k, k]`, `{prefix}.bias` `[c]`.
    pub fn load_depthwise(
        l: &mut Loader,
        prefix: &str,
        c: usize,
        k: usize,
        padding: usize,
    ) -> Self {
        Self {
            weight: l.tensor(&format!("{prefix}.weight"), [c, 1, k, k]),
            bias: Some(l.tensor(&format!("{prefix}.bias"), [c])),
            stride: 1,
            padding,
            groups: c,
            host_depthwise: None,
        }
    }

    /// `[B, C_in, H, W]` → `[B, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let Some((taps, bias)) = &self.host_depthwise else {
            return self.forward_tensor(x);
        };
        let [b, c, h, w] = x.dims();
        host_to_new(
            x,
            |x| self.forward_tensor(x),
            |src| {
                let (out, ho, wo) =
                    super::host::depthwise3x3(src, b * c, h, w, self.stride, taps, bias);
                (out, [b, c, ho, wo])
            },
        )
    }

    fn forward_tensor(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups),
        )
    }
}

/// TinyViT's `Conv2d_BN` (`[c_in, c_out]` channels, a `k × k` kernel), with the BatchNorm
/// (eps 1e-5) folded into the convolution.
pub fn conv2d_bn(
    l: &mut Loader,
    prefix: &str,
    [c_in, c_out]: [usize; 2],
    k: usize,
    stride: usize,
    groups: usize,
) -> Conv2d {
    let w = l.values(&format!("{prefix}.c.weight"), &[c_out, c_in / groups, k, k]);
    let gamma = l.values(&format!("{prefix}.bn.weight"), &[c_out]);
    let beta = l.values(&format!("{prefix}.bn.bias"), &[c_out]);
    let mean = l.values(&format!("{prefix}.bn.running_mean"), &[c_out]);
    let var = l.values(&format!("{prefix}.bn.running_var"), &[c_out]);
    l.skip(&format!("{prefix}.bn.num_batches_tracked"));
    let per = w.len() / c_out;
    let mut wf = w;
    let mut b = vec![0.0f32; c_out];
    for o in 0..c_out {
        let s = gamma[o] / (var[o] + 1e-5).sqrt();
        for v in &mut wf[o * per..(o + 1) * per] {
            *v *= s;
        }
        b[o] = beta[o] - mean[o] * gamma[o] / (var[o] + 1e-5).sqrt();
    }
    let depthwise = groups == c_in && c_in == c_out && k == 3 && (stride == 1 || stride == 2);
    let host_depthwise = (depthwise && l.kernels == Kernels::Host).then(|| (wf.clone(), b.clone()));
    Conv2d {
        weight: l.from_vec(wf, [c_out, c_in / groups, k, k]),
        bias: Some(l.from_vec(b, [c_out])),
        stride,
        padding: k / 2,
        groups,
        host_depthwise,
    }
}

/// `nn.ConvTranspose2d` with kernel 2, stride 2 (weight `[in, out, 2, 2]`).
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    /// `[c_in, c_out, 2, 2]`, as PyTorch stores it.
    pub weight: Tensor<4>,
    /// `[c_out]`.
    pub bias: Tensor<1>,
    /// [`Kernels::Host`]: the weight as one `[Cout·4, Cin]` matrix (rows ordered `co, i, j`) and the
    /// bias on the host. A 2×2 stride-2 transposed convolution is one matmul followed by a
    /// pixel shuffle; Burn's flex `conv_transpose2d` took ~40 % of the decoder's time.
    host: Option<(Tensor<2>, Vec<f32>)>,
}

impl ConvTranspose2x2 {
    /// `{prefix}.weight` `[c_in, c_out, 2, 2]` and `{prefix}.bias` `[c_out]`.
    pub fn load(l: &mut Loader, prefix: &str, c_in: usize, c_out: usize) -> Self {
        let w = l.values(&format!("{prefix}.weight"), &[c_in, c_out, 2, 2]);
        let b = l.values(&format!("{prefix}.bias"), &[c_out]);
        let host = (l.kernels == Kernels::Host).then(|| {
            let mut m = vec![0.0f32; c_out * 4 * c_in];
            for ci in 0..c_in {
                for r in 0..c_out * 4 {
                    m[r * c_in + ci] = w[ci * c_out * 4 + r];
                }
            }
            (l.from_vec(m, [c_out * 4, c_in]), b.clone())
        });
        Self {
            weight: l.from_vec(w, [c_in, c_out, 2, 2]),
            bias: l.from_vec(b, [c_out]),
            host,
        }
    }

    /// `[B, Cin, H, W]` → `[B, Cout, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let Some((wmat, bias)) = &self.host else {
            return conv_transpose2d(
                x,
                self.weight.clone(),
                Some(self.bias.clone()),
                ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1),
            );
        };
        let [b, c_in, h, w] = x.dims();
        let c_out = bias.len();
        // [B, Cout·4, H·W]: every output pixel's value before the shuffle.
        let wm = wmat.clone().unsqueeze::<3>();
        // A materialised batch: flex's matmul takes a slow path on a broadcast (stride-0) one.
        let wm = if b > 1 { wm.repeat_dim(0, b) } else { wm };
        let y = wm.matmul(x.reshape([b, c_in, h * w]));
        host_to_new(
            y,
            |y| {
                y.reshape([b, c_out, 2, 2, h, w])
                    .permute([0, 1, 4, 2, 5, 3])
                    .reshape([b, c_out, 2 * h, 2 * w])
                    + self.bias.clone().reshape([1, c_out, 1, 1])
            },
            |src| {
                let out = super::host::pixel_shuffle2_bias(src, b * c_out, h, w, bias);
                (out, [b, c_out, 2 * h, 2 * w])
            },
        )
    }
}

/// Zero-pad the two spatial dims of `[B, H, W, C]` at the bottom and right.
pub fn pad_hw(x: Tensor<4>, pad_h: usize, pad_w: usize) -> Tensor<4> {
    if pad_h == 0 && pad_w == 0 {
        return x;
    }
    let [b, h, w, c] = x.dims();
    let device = x.device();
    let x = if pad_w > 0 {
        Tensor::cat(vec![x, Tensor::zeros([b, h, pad_w, c], &device)], 2)
    } else {
        x
    };
    if pad_h > 0 {
        Tensor::cat(vec![x, Tensor::zeros([b, pad_h, w + pad_w, c], &device)], 1)
    } else {
        x
    }
}

/// `[B, H, W, C]` (H, W multiples of `ws`) → `[B·nH·nW, ws, ws, C]`.
pub fn window_partition(x: Tensor<4>, ws: usize) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    x.reshape([b, h / ws, ws, w / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (h / ws) * (w / ws), ws, ws, c])
}

/// Inverse of [`window_partition`] for a `[B, hp, wp, C]` result.
pub fn window_unpartition(x: Tensor<4>, ws: usize, b: usize, hp: usize, wp: usize) -> Tensor<4> {
    let c = x.dims()[3];
    x.reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, c])
}
