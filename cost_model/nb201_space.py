"""The NAS-Bench-201 search space as plain data: its ops, cell strings and shipped tables.

Both sides use it: the learning side tokenises cells, the zoo builds networks from them.
It imports neither torch nor tvm, so reading a cell costs nothing.
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import os
from pathlib import Path

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# Shipped inside the package (source and licence in its README), so a clone needs nothing else.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data" / "nasbench201"
DEFAULT_ACCURACY_CSV = DEFAULT_DATA_DIR / "accuracy.csv.gz"
DEFAULT_LATENCY_CSV = DEFAULT_DATA_DIR / "latency.csv.gz"


def open_table(path: str | os.PathLike) -> io.TextIOBase:
    """A CSV opened as text, gzipped or not (by its suffix)."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return path.open(newline="", encoding="utf-8")


def parse_nb201_cell(cell: str) -> list[list[tuple[str, int]]]:
    """`|op~0|+|op~0|op~1|+...` -> for each node j >= 1, its incoming edges (op, source node)."""
    nodes = []
    for j, part in enumerate(cell.strip().split("+"), start=1):
        edges = []
        for token in part.strip("|").split("|"):
            op, _, src = token.partition("~")
            if op not in NB201_OPS or not src.isdigit() or int(src) >= j:
                raise ValueError(f"bad NAS-Bench-201 edge {token!r} into node {j} of {cell!r}")
            edges.append((op, int(src)))
        nodes.append(edges)
    return nodes


@functools.lru_cache(maxsize=4)
def _read_cells(path: Path) -> tuple[tuple[int, str], ...]:
    with open_table(path) as f:
        return tuple((int(row["arch_index"]), row["cell"]) for row in csv.DictReader(f))


def nasbench201_cells(csv_path: str | os.PathLike | None = None) -> tuple[tuple[int, str], ...]:
    """(arch_index, cell string) rows of a table with those two columns; the shipped one by default."""
    path = Path(csv_path) if csv_path is not None else DEFAULT_ACCURACY_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"NAS-Bench-201 table not found at {path}; pass a CSV (or .csv.gz) with 'arch_index' "
            "and 'cell' columns")
    return _read_cells(path.resolve())
