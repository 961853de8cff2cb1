"""DICOM SEG as PACS viewers get it: every SEG medseg writes is read back independently by
highdicom (PyPI) and pydicom — pixels placed by the referenced SOP Instance UIDs equal the mask,
the references equal the input series, the geometry equals the source slices' — and by
medseg's own reader. Series from tests/data/make_series.py (shuffled file names, a tilted
stack, an enhanced multi-frame object) and pydicom's CT_small.dcm."""
import os
import subprocess
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

import medseg

ROOT = Path(__file__).resolve().parents[3]
TESTDATA = Path(os.environ.get("MEDSEG_TESTDATA", ROOT / "target" / "testdata"))
CLI = ROOT / "target" / "release" / "medseg"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def seg():
    medseg.fetch_weights()
    return medseg.Segmenter("lite-medsam")


def source_slices(path):
    """The input's images as pydicom reads them, in slice order: (uid, frame, position) each."""
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        if "PerFrameFunctionalGroupsSequence" in ds:
            for k, g in enumerate(ds.PerFrameFunctionalGroupsSequence):
                pos = [float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient]
                out.append((ds.SOPInstanceUID, k + 1, pos))
        else:
            out.append((ds.SOPInstanceUID, None, [float(v) for v in ds.ImagePositionPatient]))
    first = pydicom.dcmread(files[0])
    iop = [float(v) for v in source_orientation(first)]
    normal = np.cross(iop[:3], iop[3:])
    return sorted(out, key=lambda s: float(np.dot(s[2], normal))), first


def check_with_highdicom(path, mask, source):
    """highdicom reads `path` with no warning and places `mask` where the source slices are."""
    slices, first = source_slices(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(path)
        pydicom.dcmread(path, force=False).walk(lambda d, e: None)
        s = hd.seg.segread(path)
    assert ds.SOPClassUID == SEG_CLASS and ds.Modality == "SEG"
    assert s.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.PatientID == first.PatientID and str(ds.PatientName) == str(first.PatientName)
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == {
        u for u, _, _ in slices
    }
    if slices[0][1] is None:
        uids = [u for u, _, _ in slices]
        got = s.get_pixels_by_source_instance(uids, segment_numbers=[1])[..., 0]
    else:
        got = s.get_pixels_by_source_frame(
            slices[0][0], [f for _, f, _ in slices], segment_numbers=[1]
        )[..., 0]
    assert got.shape == mask.shape and np.array_equal(got > 0, mask)
    # Geometry: each frame at its own source slice, the source's orientation and spacing.
    by_ref = {(u, f): p for u, f, p in slices}
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in source_orientation(first)], atol=1e-6)
    for g in ds.PerFrameFunctionalGroupsSequence:
        src = g.DerivationImageSequence[0].SourceImageSequence[0]
        f = int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else None
        pos = [float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, by_ref[(src.ReferencedSOPInstanceUID, f)], atol=1e-4)
    return ds


def source_orientation(ds):
    if "ImageOrientationPatient" in ds:
        return ds.ImageOrientationPatient
    return ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient


@pytest.mark.parametrize("case", ["shuffled", "tilt", "enhanced", "clean", "sagittal"])
def test_highdicom_reads_the_seg_of_a_series(seg, tmp_path, case):
    series = TESTDATA / "series" / case
    assert series.exists(), "run tests/data/fetch.sh"
    mask, _ = seg.segment_volume(str(series), 6, [15, 15, 45, 45])
    assert mask.any()
    out = tmp_path / "lesion.dcm"
    medseg.write_mask(str(out), mask, str(series), segment_type="infarct",
                      model="lite-medsam", weights_sha256=seg.weights_sha256)
    ds = check_with_highdicom(out, mask, series)
    item = ds.SegmentSequence[0]
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "55641003"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentAlgorithmName == "medseg lite-medsam"
    assert seg.weights_sha256[:12] in item.SegmentDescription
    # Only the slices holding the mask, unless asked.
    assert ds.NumberOfFrames == int(mask.any(axis=(1, 2)).sum())
    back, segments = medseg.read_seg(str(out), str(series))
    assert back.shape == (1,) + mask.shape and np.array_equal(back[0], mask)
    assert segments[0]["label"] == "lesion" and segments[0]["type"][1] == "55641003"


def test_every_frame_when_asked_and_a_single_file(seg, tmp_path):
    ct = TESTDATA / "CT_small.dcm"
    mask, _ = seg.segment_volume(str(ct), 0, [30, 40, 90, 100], window="soft")
    out = tmp_path / "ct.dcm"
    medseg.write_mask(str(out), mask, str(ct), label="mass", segment_type="lesion")
    check_with_highdicom(out, mask, ct)
    series = TESTDATA / "series" / "clean"
    empty = np.zeros((12, 64, 64), bool)
    empty[4, 10:20, 10:20] = True
    out = tmp_path / "all.dcm"
    medseg.write_mask(str(out), empty, str(series), all_frames=True)
    ds = check_with_highdicom(out, empty, series)
    assert ds.NumberOfFrames == 12


def test_cli_writes_a_seg_and_refuses_one_for_nifti(tmp_path):
    assert CLI.exists(), f"{CLI} missing: build with cargo first"
    series = TESTDATA / "series" / "shuffled"
    out = tmp_path / "cli.dcm"
    npy = tmp_path / "cli.npy"
    for dest in (out, npy):
        r = subprocess.run([str(CLI), "segment", "--model", "lite-medsam", "--input", str(series),
                            "--box", "15,15,45,45", "--slice", "6", "--output", str(dest),
                            "--seg-type", "SCT:52988006:Lesion", "--seg-label", "core"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    mask = np.load(npy).astype(bool)
    ds = check_with_highdicom(out, mask, series)
    assert ds.SegmentSequence[0].SegmentLabel == "core"
    info = subprocess.run([str(CLI), "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "DICOM SEG (BINARY), 1 segment(s)" in info.stdout
    nifti = TESTDATA / "anatomical.nii"
    bad = tmp_path / "x.dcm"
    r = subprocess.run([str(CLI), "segment", "--model", "lite-medsam", "--input", str(nifti),
                        "--box", "10,10,30,30", "--output", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "the input is not DICOM" in r.stderr and not bad.exists()
    with pytest.raises(medseg.MedsegError, match="not DICOM"):
        medseg.write_mask(str(bad), np.zeros((1, 64, 64), bool), str(nifti))


def test_adc_core_volume_cli_and_python(seg, tmp_path):
    """The stroke readout: the clean series (slice k = MR_small + 10·k) read as the ADC map of
    the shuffled series (the same grid), in 10^-6 mm²/s; expected values from numpy."""
    series, adc = TESTDATA / "series" / "shuffled", TESTDATA / "series" / "clean"
    mask, stats = seg.segment_volume(str(series), 6, [15, 15, 45, 45])
    values, spacing, _, _ = medseg.read_volume(str(adc))
    inside = values[mask].astype(np.float64)
    voxel_ml = np.prod(spacing) / 1000
    for threshold in (620.0, 300.0):
        r = medseg.adc_readout(mask, str(series), str(adc), threshold=threshold)
        assert abs(r["mean"] - inside.mean()) < 1e-6 * inside.mean()
        assert r["core_voxels"] == int((inside < threshold).sum()) > 0
        assert abs(r["core_ml"] - r["core_voxels"] * voxel_ml) < 1e-9 and r["note"] is None
    # The same map said to be in 10^-3 mm²/s: a thousand times larger, and a note on the unit.
    r = medseg.adc_readout(mask, str(series), str(adc), units="1e-3")
    assert r["core_voxels"] == int((inside * 1000 < 620).sum()) and "1e-6" in r["note"]
    out, js = tmp_path / "m.nii.gz", tmp_path / "s.json"
    cmd = [str(CLI), "segment", "--model", "lite-medsam", "--input", str(series), "--box",
           "15,15,45,45", "--slice", "6", "--output", str(out), "--adc", str(adc),
           "--adc-threshold", "300", "--json", str(js)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    import json
    got = json.loads(js.read_text())["objects"][0]
    assert got["voxels"] == int(mask.sum()) == stats["voxels"]
    assert got["adc"]["core_voxels"] == int((inside < 300).sum())
    assert f"core (ADC < 300) {got['adc']['core_ml']:.3f} mL" in res.stdout
    # --json -: stdout is the JSON alone (the summary lines go to stderr).
    res = subprocess.run(cmd[:-1] + ["-"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(js.read_text()) and "ADC:" in res.stderr
    with pytest.raises(medseg.MedsegError, match="same grid"):
        medseg.adc_readout(np.zeros((1, 128, 128), bool), str(TESTDATA / "CT_small.dcm"),
                           str(adc))


def test_batch_reports_the_core_per_case(tmp_path):
    """`adc` column: results.csv gets the readout; a map on another grid fails its case only."""
    import csv
    series, adc = TESTDATA / "series" / "shuffled", TESTDATA / "series" / "clean"
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "case_id,input,key_slice,x0,y0,x1,y1,model,window,adc,mask_format,max_drift\n"
        f"s1,{series},6,15,15,45,45,,,{adc}\n"
        f"s2,{series},6,15,15,45,45,,,{TESTDATA / 'CT_small.dcm'}\n"
        f"s3,{series},6,15,15,45,45,,,,dcm,\n"
        f"s4,{TESTDATA / 'anatomical.nii'},,10,10,30,30,,,,dcm,\n"
        f"s5,{series},6,15,15,45,45,,,,,0\n")
    out = tmp_path / "out"
    r = subprocess.run([str(CLI), "batch", str(cases), "--output-dir", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    rows = {row["case_id"]: row for row in csv.DictReader(open(out / "results.csv"))}
    assert rows["s2"]["status"] == "failed" and "same grid" in rows["s2"]["error"]
    assert rows["s1"]["status"] == "ok" and str(adc) in rows["s1"]["adc"]
    mask = medseg.read_volume(str(out / "s1.nii.gz"))[0] > 0.5
    want = medseg.adc_readout(mask, str(series), str(adc))
    assert abs(float(rows["s1"]["core_ml"]) - want["core_ml"]) < 1e-4
    assert abs(float(rows["s1"]["adc_mean"]) - want["mean"]) < 0.05
    # mask_format dcm: the case's mask is a DICOM SEG over its series (highdicom reads it);
    # a NIfTI input cannot have one and fails before the model runs.
    assert rows["s3"]["status"] == "ok" and rows["s3"]["mask"] == "s3.dcm"
    assert rows["s3"]["mask_format"] == "dcm" and not (out / "s3.nii.gz").exists()
    check_with_highdicom(out / "s3.dcm", mask, series)
    assert rows["s4"]["status"] == "failed" and "not DICOM" in rows["s4"]["error"]
    # A propagation option is part of what the case ran with.
    assert rows["s5"]["status"] == "ok" and rows["s5"]["options"] == "max_drift=0"
    assert rows["s1"]["options"] == ""
