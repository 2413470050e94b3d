"""Regenerate 03_predict/paper_numbers.csv: every zebrafinch row of the authors' per-ROI result CSVs, plus the hemi and
FIB-25 rows (figure readings, kept as they are in the file).

The authors' CSVs are kept verbatim in ``03_predict/paper_sources/zfinch/`` (from the public repository
LocalShapeDescriptors/LocalShapeDescriptors.github.io at 0cc0f50, ``plots/csvs/zfinch/``): ``all_rois/`` has one row
per ROI (10 cubes and the Benchmark ROI) and ``has_mask`` for each network, all at that network's one threshold;
``mcm_rois/`` the min-cut metric runs. LongRange's rows are the bucket's run (``longrange_padding``); the other
LongRange run of ``mcm_rois/longrange_validation_best_voi_sum_mcm.csv`` (threshold 0.04) is named in ``mcm_note``.

Run: ``python benchmarks/build_paper_numbers.py`` (``--check``: fail if the file differs from what it would write).
Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

PREDICT = Path(__file__).resolve().parents[1] / "03_predict"
SOURCES = PREDICT / "paper_sources" / "zfinch"
OUTPUT = PREDICT / "paper_numbers.csv"
ORIGIN = "LocalShapeDescriptors/LocalShapeDescriptors.github.io@0cc0f50 plots/csvs/zfinch"
NETWORKS = {
    "baseline": "vanilla", "long_range": "longrange_padding", "malis": "malis", "mtlsd": "mtlsd", "aclsd": "aclsd",
    "acrlsd": "acrlsd", "ffn": "ffn",
}  # fmt: skip
"""Our network name → the stem of its CSV (``<stem>_validation_best_voi_sum.csv``)."""
ROIS = [f"{edge}_micron_roi" for edge in (11, 18, 25, 32, 40, 47, 54, 61, 68, 76)] + ["benchmark_roi"]
FIELDS = {
    "voi_split": "voi_split", "voi_merge": "voi_merge", "voi_sum": "voi_sum", "erl": "expected_run_length",
    "max_erl": "max_erl", "normalized_erl": "normalized_erl", "threshold": "threshold",
    "components": "number_of_components", "total_path_length": "total_path_length",
    "background_sites": "number_of_background_sites", "mcm_splits": "total_splits_needed_to_fix_merges",
    "mcm_merges": "total_merges_needed_to_fix_splits",
}  # fmt: skip
"""Our column → the authors' column."""
COLUMNS = ["dataset", "network", "roi", "masked", *FIELDS, "mcm_note", "source"]
INTEGERS = {"components", "background_sites", "mcm_splits", "mcm_merges"}


def read_source(path: Path) -> dict[tuple[str, bool], dict[str, str]]:
    """The rows of one of the authors' CSVs: ``(run_type, has_mask)`` → row."""
    with open(path, newline="") as f:
        return {(r["run_type"], r["has_mask"] == "1"): r for r in csv.DictReader(f)}


def _value(column: str, text: str) -> str:
    """The authors' value as written (``nan`` → empty; counts without their ``.0``)."""
    if text in ("", "nan"):
        return ""
    if column in INTEGERS:
        return str(int(float(text)))
    return text


def zebrafinch_rows(sources: Path = SOURCES) -> list[dict[str, str]]:
    """Every zebrafinch row of the authors' ``all_rois`` CSVs, network by network, ROI by ROI, masked first."""
    other = read_source(sources / "mcm_rois" / "longrange_validation_best_voi_sum_mcm.csv")
    rows = []
    for network, stem in NETWORKS.items():
        name = f"{stem}_validation_best_voi_sum.csv"
        table = read_source(sources / "all_rois" / name)
        for roi in ROIS:
            for masked in (True, False):
                found = table.get((roi, masked))
                if found is None:
                    continue
                row = {"dataset": "zebrafinch", "network": network, "roi": roi, "masked": str(masked).lower()}
                row |= {ours: _value(ours, found[theirs]) for ours, theirs in FIELDS.items()}
                row["mcm_note"] = ""
                if network == "long_range" and (roi, masked) in other and other[(roi, masked)]["threshold"]:
                    alt = other[(roi, masked)]
                    if _value("mcm_splits", alt["total_splits_needed_to_fix_merges"]):
                        row["mcm_note"] = (
                            f"another LongRange run (mcm_rois/longrange_validation_best_voi_sum_mcm.csv, threshold "
                            f"{alt['threshold']}): {_value('mcm_splits', alt['total_splits_needed_to_fix_merges'])} + "
                            f"{_value('mcm_merges', alt['total_merges_needed_to_fix_splits'])}"
                        )
                row["source"] = f"{ORIGIN}/all_rois/{name}"
                rows.append(row)
    return rows


def other_rows(existing: Path = OUTPUT) -> list[dict[str, str]]:
    """The hemi and FIB-25 rows of the existing file, unchanged (they come from figures, not from CSVs)."""
    with open(existing, newline="") as f:
        return [{c: r.get(c, "") for c in COLUMNS} for r in csv.DictReader(f) if r["dataset"] != "zebrafinch"]


def render(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if paper_numbers.csv differs from its sources")
    args = parser.parse_args(argv)
    text = render(zebrafinch_rows() + other_rows())
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT}: differs from its sources; run python benchmarks/{Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{OUTPUT}: matches its sources")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
