"""Results on disk, written as they arrive, so an interrupted study resumes where it stopped.

A study directory holds ``study.json`` (the designs, replications, seed and fit settings; a
rerun with other settings is refused rather than mixed in) and one CSV per design,
``design_000.csv``, ``design_001.csv``, ... Each finished replication's rows are appended in one
write and flushed. A replication whose rows did not all reach the disk (the process was
killed mid-write) is dropped on reading and runs again. CSV, not Parquet: appending is what
an interruptible study needs, and it adds no dependency; floats are written at full
precision, so rows read back equal the rows computed.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pymsem.specification.errors import MSEMSpecificationError
from pymsem.study.replicate import COLUMNS

__all__ = ["Store", "normalize"]


_TEXT = ("level", "parameter", "block", "label", "warnings", "error")
_INT = ("design", "rep", "n_rows", "data_seed", "fit_seed")
_BOOL = ("covers", "excludes_zero", "converged", "reused")
_BOOLS = {True: True, False: False, "True": True, "False": False}  # 1 and 0 hash as True, False


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The per-replication table with fixed column types, whether built in memory or read back.

    Text columns are ``str`` ("" when empty), positions and seeds ``int64``, flags pandas'
    nullable ``boolean`` (NA where undefined: coverage without a truth, a failed replication),
    everything else ``float64``.
    """
    df = df.reindex(columns=COLUMNS).reset_index(drop=True)
    for c in COLUMNS:
        if c in _TEXT:
            df[c] = df[c].fillna("").astype(str)
        elif c in _INT:
            df[c] = pd.to_numeric(df[c]).astype("int64")
        elif c in _BOOL:
            df[c] = df[c].map(_BOOLS).astype("boolean")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


class Store:
    """The per-design CSV files of one study directory."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "study.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            diff = sorted(
                k for k in set(old) | set(config) if k not in ("reps",) and old.get(k) != config.get(k)
            )
            if diff:
                raise MSEMSpecificationError(
                    f"{self.path} holds a study with other settings ({', '.join(diff)} differ). "
                    f"Use a new output directory, or delete this one to start afresh."
                )
        meta.write_text(json.dumps(config, indent=1, default=str))
        self._clean()

    def file(self, design: int) -> Path:
        return self.path / f"design_{design:03d}.csv"

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write one replication's rows to its design's file in a single write."""
        if not rows:
            return
        f = self.file(int(rows[0]["design"]))
        buf = io.StringIO()
        pd.DataFrame(rows, columns=COLUMNS).to_csv(buf, index=False, header=not f.exists())
        with open(f, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> pd.DataFrame:
        """Every complete replication's rows, all designs, sorted by design, rep and row."""
        frames = [self._read(f) for f in sorted(self.path.glob("design_*.csv"))]
        frames = [f for f in frames if len(f)]
        if not frames:
            return normalize(pd.DataFrame(columns=COLUMNS))
        return pd.concat(frames, ignore_index=True).sort_values(
            ["design", "rep"], kind="stable", ignore_index=True
        )

    def done(self) -> set[tuple[int, int]]:
        """The (design, rep) pairs already on disk."""
        df = self.read()
        return set(zip(df["design"].astype(int), df["rep"].astype(int)))

    # ---------------------------------------------------------------- private
    @staticmethod
    def _read(f: Path) -> pd.DataFrame:
        try:
            df = pd.read_csv(f, on_bad_lines="skip", engine="python", keep_default_na=False,
                             na_values=[""])  # fmt: skip
        except pd.errors.EmptyDataError:
            return pd.DataFrame(columns=COLUMNS)
        for c in ("design", "rep", "n_rows"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
        df = df.dropna(subset=["design", "rep", "n_rows"])
        counts = df.groupby(["design", "rep"])["n_rows"].transform("size")
        df = df[counts == df["n_rows"]]  # a replication cut short mid-write is run again
        df = df.drop_duplicates(subset=["design", "rep", "level", "parameter", "label"], keep="first")
        return normalize(df)

    def _clean(self) -> None:
        """Rewrite files that hold a cut-short replication, so new rows append to whole ones."""
        for f in self.path.glob("design_*.csv"):
            text = f.read_text(encoding="utf-8")
            clean = self._read(f)
            buf = io.StringIO()
            clean.reindex(columns=COLUMNS).to_csv(buf, index=False)
            if buf.getvalue() != text:
                tmp = f.with_suffix(".tmp")
                tmp.write_text(buf.getvalue(), encoding="utf-8")
                os.replace(tmp, f)

    @staticmethod
    def rows_of(results: pd.DataFrame, pairs: Iterable[tuple[int, int]]) -> pd.DataFrame:
        keys = set(pairs)
        mask = [(int(d), int(r)) in keys for d, r in zip(results["design"], results["rep"])]
        return results[mask]
