"""Summarise compare.sh's pairs: per stage, the range of each side and of medseg ÷ PyTorch.

Input: one line per pair, the PyTorch JSON and the medseg JSON separated by a tab.
`decoder_next_s` (medseg: a further prompt on an embedding that already served one) is
compared with PyTorch's `decoder_s`, which pays the same for every prompt.
"""
import json
import statistics
import sys

STAGES = [  # (row name, medseg key, torch key, unit)
    ("load", "load_s", "load_s", "s"),
    ("encoder", "encoder_s", "encoder_s", "s"),
    ("decoder, first prompt", "decoder_s", "decoder_s", "ms"),
    ("decoder, next prompts", "decoder_next_s", "decoder_s", "ms"),
    ("peak RSS", "peak_rss_mb", "peak_rss_mb", "MB"),
]


def span(values, unit):
    scale = 1000.0 if unit == "ms" else 1.0
    lo, hi = min(values) * scale, max(values) * scale
    digits = 0 if unit == "MB" else (1 if unit == "ms" else 3)
    return f"{lo:.{digits}f}–{hi:.{digits}f}" if len(values) > 1 else f"{lo:.{digits}f}"


def main(path):
    rows = {}
    with open(path) as f:
        for line in f:
            t, r = (json.loads(x) for x in line.rstrip("\n").split("\t"))
            rows.setdefault(t["model"], []).append((t, r))
    print(f"{'model':<6} {'stage':<22} {'torch':>14} {'medseg':>14}  ratio min / median / max (pairs)")
    for model, pairs in rows.items():
        for name, mk, tk, unit in STAGES:
            got = [(t[tk], r[mk]) for t, r in pairs if tk in t and mk in r and t[tk] > 0]
            if not got:
                continue
            ratios = [m / t for t, m in got]
            print(
                f"{model:<6} {name:<22} {span([t for t, _ in got], unit):>11} {unit:<2} "
                f"{span([m for _, m in got], unit):>11} {unit:<2}  "
                f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f} ({len(got)})"
            )


if __name__ == "__main__":
    main(sys.argv[1])
