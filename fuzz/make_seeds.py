"""Write the small hand-made seed inputs committed in fuzz/seeds/ (needs numpy + opencv:
tests/reference/make_golden.sh's venv has both). Real files are added by fuzz/corpus.sh."""
import gzip, os, struct
import cv2
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
def out(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

rng = np.random.default_rng(7)
# PNG / JPEG: grey, 16-bit grey, RGB, RGBA, 1x1, and JPEG grey/colour.
def enc(ext, a, *params):
    ok, buf = cv2.imencode(ext, a, list(params))
    assert ok
    return buf.tobytes()
out("png", "grey8.png", enc(".png", rng.integers(0, 255, (6, 8), dtype=np.uint8)))
out("png", "grey16.png", enc(".png", rng.integers(0, 65535, (5, 7), dtype=np.uint16)))
out("png", "rgb.png", enc(".png", rng.integers(0, 255, (9, 5, 3), dtype=np.uint8)))
out("png", "rgba.png", enc(".png", rng.integers(0, 255, (4, 4, 4), dtype=np.uint8)))
out("png", "one_pixel.png", enc(".png", np.full((1, 1), 200, np.uint8)))
out("png", "wide.png", enc(".png", rng.integers(0, 255, (1, 300), dtype=np.uint8)))
out("png", "grey.jpg", enc(".jpg", rng.integers(0, 255, (16, 16), dtype=np.uint8), cv2.IMWRITE_JPEG_QUALITY, 80))
out("png", "rgb.jpg", enc(".jpg", rng.integers(0, 255, (8, 16, 3), dtype=np.uint8), cv2.IMWRITE_JPEG_QUALITY, 80))

# NIfTI-1: a 4x3x2 int16 volume with scl_slope, an sform, as .nii and .nii.gz.
def nifti(dims, dtype_code, bitpix, data, slope=1.0, inter=0.0, sform=1):
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    d = [len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into("<8h", h, 40, *d)
    struct.pack_into("<hh", h, 70, dtype_code, bitpix)
    struct.pack_into("<8f", h, 76, 1.0, 0.9, 0.8, 2.5, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)  # vox_offset
    struct.pack_into("<ff", h, 112, slope, inter)
    struct.pack_into("<hh", h, 252, 0, sform)  # qform_code, sform_code
    struct.pack_into("<4f", h, 280, 0.9, 0, 0, -10)
    struct.pack_into("<4f", h, 296, 0, 0.8, 0, -20)
    struct.pack_into("<4f", h, 312, 0, 0, 2.5, -30)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0" * 4 + data

vol = rng.integers(-1000, 1000, (2, 3, 4), dtype=np.int16)  # z, y, x in C order = x fastest
n1 = nifti((4, 3, 2), 4, 16, vol.tobytes(), slope=0.5, inter=10.0)
out("nifti", "int16_4x3x2.nii", n1)
out("nifti", "int16_4x3x2.nii.gz", gzip.compress(n1, mtime=0))
out("nifti", "float32_5x5.nii", nifti((5, 5), 16, 32, rng.normal(size=25).astype("<f4").tobytes(), sform=0))
out("nifti", "uint8_3x3x3.nii", nifti((3, 3, 3), 2, 8, bytes(range(27))))

# Box prompts: image height and width (u16 little-endian) then the box text.
for i, (h, w, text) in enumerate([
    (512, 512, "95,255,190,350"), (256, 300, " 0 , 0 ,300,256"), (10, 10, "1e0,2.5,9.99,10"),
    (1, 1, "0,0,1,1"), (100, 50, "-1,2,3,4"), (100, 50, "1,2,3"), (0, 0, "0,0,0,0"),
]):
    out("prompt", f"box{i}", struct.pack("<HH", h, w) + text.encode())

# safetensors: two small tensors (f32 and f16), written by hand (u64 header length + JSON).
import json
a = rng.normal(size=(2, 3)).astype("<f4").tobytes()
b = rng.normal(size=(4,)).astype("<f2").tobytes()
hdr = json.dumps({
    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, len(a)]},
    "b": {"dtype": "F16", "shape": [4], "data_offsets": [len(a), len(a) + len(b)]},
}).encode()
hdr += b" " * (-len(hdr) % 8)
out("checkpoint", "small.safetensors", struct.pack("<Q", len(hdr)) + hdr + a + b)

# MedSAM2's checkpoint layout (every tensor name of SAM 2.1 Hiera-Tiny, in the order of
# tests/fixtures/golden/medsam2_layout.txt), each tensor one float: the header a real
# MedSAM2_latest.pt's safetensors conversion has, without its 156 MB.
layout = os.path.join(here, "..", "tests", "fixtures", "golden", "medsam2_layout.txt")
names = [l.split()[0] for l in open(layout).read().splitlines() if l.strip()]
one = struct.pack("<f", 0.5)
hdr = json.dumps({n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                  for i, n in enumerate(names)}).encode()
hdr += b" " * (-len(hdr) % 8)
out("checkpoint", "medsam2_names.safetensors", struct.pack("<Q", len(hdr)) + hdr + one * len(names))
