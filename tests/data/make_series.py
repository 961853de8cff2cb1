"""Crafted DICOM series for the geometry tests (issue: no silent misregistration).

Made with pydicom (from the PyPI wheel that tests/data/fetch.sh unpacks; no numpy needed) from
pydicom's own MR_small.dcm (64×64, 16-bit signed): twelve axial slices 4 mm apart, slice k with
RescaleIntercept 10·k so that every slice's values tell which slice it is. Each folder under
OUT/series/ alters one thing the way real exports do:

  clean/          the reference series
  gap/            slice 5 missing (a step of 8 mm)
  duplicate/      slice 6 twice (same position and pixels, a new SOPInstanceUID)
  conflict/       a second, different image at slice 6's position
  uneven/         slices 6..11 shifted by 2 mm
  tilt/           gantry tilt: ImagePositionPatient drifts 0.3 mm in y per slice
  noipp/          slice 3 without ImagePositionPatient
  orientation/    slice 4 coronal
  mono1/          every slice MONOCHROME1
  with_sr/        clean + a structured report (no pixel data)
  enhanced/       one enhanced multi-frame object: 12 frames, per-frame PlanePositionSequence
  enhanced_gap/   the same without frame 6 (a step of 8 mm between frames 5 and 6)
  shuffled/       clean, with file names that sort in no slice order (z7_...): readers must
                  order by position, and a DICOM SEG must reference each slice's own instance
  sagittal/       twelve sagittal slices (rows along -z, columns along y) stepping along x,
                  InstanceNumber running against the position

Usage: python3 make_series.py PYDICOM_DIR OUT
"""
import copy
import os
import shutil
import sys

sys.path.insert(0, sys.argv[1])
import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

OUT = os.path.join(sys.argv[2], "series")
BASE = pydicom.dcmread(os.path.join(sys.argv[1], "pydicom/data/test_files/MR_small.dcm"))
SERIES = generate_uid(entropy_srcs=["medseg-series"])
X0, Y0, STEP, N = -83.9063, -91.2, 4.0, 12


def uid(*parts):
    return generate_uid(entropy_srcs=["medseg"] + [str(p) for p in parts])


def slice_ds(k, z=None, y=Y0, intercept=None, tag=""):
    ds = copy.deepcopy(BASE)
    ds.SeriesInstanceUID = SERIES
    ds.SOPInstanceUID = uid(k, tag)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = k + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [X0, y, STEP * k if z is None else z]
    ds.SliceThickness = STEP
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 10 * k if intercept is None else intercept
    return ds


def write(case, name, ds):
    os.makedirs(os.path.join(OUT, case), exist_ok=True)
    ds.save_as(os.path.join(OUT, case, name), enforce_file_format=True)


def series(case, alter=lambda k, ds: ds, skip=()):
    for k in range(N):
        if k not in skip:
            ds = alter(k, slice_ds(k))
            if ds is not None:
                write(case, f"s{k:02d}.dcm", ds)


def drop_ipp(k, ds):
    if k == 3:
        del ds.ImagePositionPatient
    return ds


def coronal(k, ds):
    if k == 4:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    return ds


def mono1(k, ds):
    ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


def report():
    ds = Dataset()
    ds.file_meta = copy.deepcopy(BASE.file_meta)
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid("sr")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = uid("sr-series")
    ds.StudyInstanceUID = BASE.StudyInstanceUID
    ds.PatientName = BASE.PatientName
    return ds


def item(**kw):
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def enhanced(frames):
    """An enhanced MR object holding MR_small once per frame, at the given slice indices."""
    ds = slice_ds(0, tag="enhanced")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        if kw in ds:
            delattr(ds, kw)
    ds.RescaleIntercept = 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = BASE.PixelData * len(frames)
    measures = item(PixelSpacing=BASE.PixelSpacing, SliceThickness=STEP)
    shared = item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([measures]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[X0, Y0, STEP * k])]))
        for k in frames
    ])
    return ds


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    series("clean")
    series("gap", skip=(5,))
    series("duplicate")
    write("duplicate", "s06b.dcm", slice_ds(6, tag="copy"))
    series("conflict")
    write("conflict", "s06b.dcm", slice_ds(6, intercept=999, tag="other"))
    series("uneven", lambda k, ds: slice_ds(k, z=STEP * k + (2.0 if k >= 6 else 0.0)))
    series("tilt", lambda k, ds: slice_ds(k, y=Y0 + 0.3 * k))
    series("noipp", drop_ipp)
    series("orientation", coronal)
    series("mono1", mono1)
    series("with_sr")
    write("with_sr", "report.dcm", report())
    write("enhanced", "mf.dcm", enhanced(list(range(N))))
    write("enhanced_gap", "mf.dcm", enhanced([k for k in range(N) if k != 6]))
    for k in range(N):  # names in an order unrelated to the slices': 7, 2, 9, 4, 11, 6, 1, ...
        write("shuffled", f"z{(7 * k + 5) % N:02d}_{k}.dcm", slice_ds(k, tag="shuffled"))
    for k in range(N):
        ds = slice_ds(k, tag="sagittal")
        ds.SeriesInstanceUID = uid("sagittal-series")
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-STEP * k, Y0, 40.0]
        ds.InstanceNumber = N - k
        write("sagittal", f"s{k:02d}.dcm", ds)


main()
