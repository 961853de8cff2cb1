from typing import Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._medseg import (
    BackendError as BackendError,
    Embedding as Embedding,
    FileError as FileError,
    ReadWarning as ReadWarning,
    ImageError as ImageError,
    MedsegError as MedsegError,
    PromptError as PromptError,
    WeightsError as WeightsError,
    __version__ as __version__,
    fetch_weights as fetch_weights,
    read_volume as read_volume,
    window as window,
    write_nifti_mask as write_nifti_mask,
)

ArrayLike = Union[npt.NDArray, Sequence[float]]

class PromptWarning(UserWarning): ...

class Segmenter:
    def __init__(self, model: str = ..., weights: Optional[str] = ..., device: str = ...) -> None: ...
    @property
    def model(self) -> str: ...
    def embed(self, image: npt.NDArray) -> Embedding: ...
    def set_image(self, image: npt.NDArray) -> None: ...
    def predict(
        self,
        point_coords: Optional[ArrayLike] = ...,
        point_labels: Optional[ArrayLike] = ...,
        box: Optional[ArrayLike] = ...,
        mask_input: Optional[npt.NDArray] = ...,
        multimask_output: bool = ...,
        embedding: Optional[Embedding] = ...,
    ) -> Tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
    def segment(self, image: npt.NDArray, box: ArrayLike) -> npt.NDArray[np.bool_]: ...
    def segment_volume(
        self, volume: Union[str, npt.NDArray], key_slice: Optional[int], box: ArrayLike,
        spacing: Optional[Sequence[float]] = ..., window: Optional[str] = ..., modality: Optional[str] = ...,
        largest_component: bool = ..., official_fallback: bool = ..., max_drift: float = ...,
        uneven_slices: str = ...,
    ) -> Tuple[npt.NDArray[np.bool_], dict]: ...

def segment(image: npt.NDArray, box: ArrayLike, model: str = ..., weights: Optional[str] = ...) -> npt.NDArray[np.bool_]: ...
def segment_volume(volume: Union[str, npt.NDArray], key_slice: Optional[int], box: ArrayLike, model: str = ..., weights: Optional[str] = ..., **kw) -> Tuple[npt.NDArray[np.bool_], dict]: ...
