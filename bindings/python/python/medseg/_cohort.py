"""``medseg.batch``: a cohort of volumes, serially or spread over a Dask cluster.

Each case is a dict (or a CSV row) ``case_id, input, key_slice, x0, y0, x1, y1[, model,
window]``. Every case's mask is written by whoever segments it (a Dask worker writes into
``output_dir`` directly, so on a cluster ``output_dir`` and the inputs must be on a shared
file system); ``results.csv`` is kept by the caller through the library's ``Cohort`` (the
same plan, skip rule and merged results file as ``medseg batch``). What travels
to a worker is the case (a few hundred bytes) and back its result; the weights never travel:
each worker builds its Segmenter once, from its own files or cache.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Mapping, Optional, Union

from . import _medseg

# One Segmenter per (model, weights, precision) per process, built on first use: on a Dask
# worker, once.
_SEGMENTERS: dict = {}


def _segmenter(model: str, weights: Optional[str], precision: str = "f32"):
    from . import Segmenter

    key = (model, weights, precision)
    if key not in _SEGMENTERS:
        _SEGMENTERS[key] = Segmenter(model, weights, precision=precision)
    return _SEGMENTERS[key]


def _failed(case: Mapping[str, str], error: str) -> dict:
    return dict(_medseg.failed_result(case.get("case_id", ""), error))


def run_case(case: Mapping[str, str], output_dir: str, model: str = "lite-medsam",
             weights: Optional[str] = None, precision: str = "f32") -> dict:
    """Segment one case in this process (a Dask task): its result as a dict of text fields."""
    family = case.get("model") or model
    try:
        seg = _segmenter(family, weights if family == model else None, precision)
    except _medseg.MedsegError as e:
        return _failed(case, str(e))
    try:
        return dict(_medseg.run_case(seg._inner, dict(case), output_dir))
    except (_medseg.MedsegError, ValueError) as e:  # a malformed case: recorded, not raised
        return _failed(case, str(e))


def _cases(cases):
    """The cases as dicts of text fields, and the CSV they came from (or None)."""
    if isinstance(cases, (str, bytes)) or hasattr(cases, "__fspath__"):
        path = os.path.abspath(os.fsdecode(cases))
        return [dict(c) for c in _medseg.read_cases(path)], path
    out = []
    for c in cases:
        row = {k: "" if v is None else str(v) for k, v in dict(c).items()}
        if "box" in row and isinstance(c.get("box"), (list, tuple)):
            row.update(zip(("x0", "y0", "x1", "y1"), (str(v) for v in c["box"])))
            del row["box"]
        out.append(row)
    return out, None  # ids (once each, also ignoring case) are checked by the library's plan


def batch(cases: Union[str, "os.PathLike[str]", Iterable[Mapping]], output_dir: Union[str, "os.PathLike[str]"],
          client=None, model: str = "lite-medsam", weights: Optional[str] = None,
          precision: str = "f32", mask_format: Optional[str] = None) -> List[dict]:
    """Segment a cohort into ``output_dir``: one ``<case_id>.nii.gz`` per case and one
    ``results.csv`` (case_id, status, volume_ml, voxels, first_slice, last_slice, seconds,
    mask, error, adc_mean, core_ml, then what the case ran with: input, input_stamp, key_slice,
    box, model, window, precision, weights_sha256, adc, mask_format). ``cases`` is a CSV path or an iterable of dicts (``box`` may
    stand for x0..y1). The library plans the whole cohort first (as ``medseg batch`` does): a
    case whose mask would overwrite any case's input or the cases file is not run (recorded as
    failed), and a ``results.csv`` that would overwrite one is an error. A case finished
    before with the same input (path, size, modification time), prompt, model, window,
    precision and weights is skipped; one that changed is redone (a ``UserWarning`` says why).
    ``results.csv`` keeps the rows of other runs into the same folder. A failing case is
    recorded and the rest go on. With ``client`` (a ``dask.distributed.Client``) the cases run
    on its workers, one Segmenter per worker; else here, one after another.
    ``precision`` as for ``Segmenter`` ("f32" or "bf16"). ``mask_format`` ("nii.gz" or "dcm":
    a DICOM SEG per case, DICOM inputs only) applies to the cases that do not give their own.
    Returns the results in the order of the cases."""
    import warnings

    out = os.path.abspath(os.fsdecode(output_dir))
    rows, cases_file = _cases(cases)
    if mask_format is not None:
        rows = [dict(r, mask_format=r.get("mask_format") or mask_format) for r in rows]
    w = None if weights is None else os.path.abspath(os.fsdecode(weights))
    cohort = _medseg.Cohort(rows, out, cases_file, model, w, precision)
    planned = cohort.plan()
    order = [dict(case)["case_id"] for case, *_ in planned]
    results = {}
    todo = []
    for case, what, result, why in planned:
        case = dict(case)
        if what == "run":
            if why:
                warnings.warn(f"case {case['case_id']} is redone: {why}", UserWarning, stacklevel=2)
            todo.append(case)
            continue
        results[case["case_id"]] = dict(result)
        if what == "refused":
            cohort.record(results[case["case_id"]])

    def record(r: dict) -> None:
        results[r["case_id"]] = r
        cohort.record(r)

    try:
        if client is None:
            for c in todo:
                record(run_case(c, out, model, w, precision))
        else:
            from dask.distributed import as_completed

            futures = client.map(run_case, todo, output_dir=out, model=model, weights=w,
                                 precision=precision, pure=False)
            for fut in as_completed(futures):
                record(fut.result())
    finally:
        cohort.finish()
    return [results[i] for i in order]
