"""Run one ingest job: read, cleanse, check the contract, write, record the run.

Per chunk: lineage columns → string cleansing → type coercion → value cleansing → rules and
schema drift → one atomic commit of rows, quarantine rows and the source state. A crash at
any point leaves whole batches only; a re-run resumes from the committed state, and a batch
committed again replaces itself (its id is deterministic), so nothing is lost or doubled.

>>> from loopline.config import config_from_dict
>>> cfg = config_from_dict({"ingest": {"a": {"source": {"type": "file", "path": "a.csv"},
...                                          "destination": {"table": "a"}}}})
>>> IngestPipeline(cfg, "a").job.destination.table
'a'
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.config import STRING_STEPS, IngestJobConfig, LooplineConfig
from loopline.config.cleanse import CleanseStepSpec, NullTokensStep, RenameStep, TrimStep
from loopline.config.contracts import ContractConfig
from loopline.errors import (
    ConfigError,
    LooplineError,
    TransientSinkError,
    TransientSourceError,
)
from loopline.ingest.alerts import send_alert
from loopline.ingest.cleanse import apply_steps, default_string_steps
from loopline.ingest.contract import ContractEngine
from loopline.ingest.ledger import RunLedger, RunRecord
from loopline.ingest.quarantine import StageResult, parse_rule, rejects_to_quarantine
from loopline.ingest.schema_drift import SchemaDrift
from loopline.ingest.sources.base import Chunk, PrefersTypes
from loopline.ingest.sources.factory import open_source
from loopline.ingest.text_edges import unpadded_columns
from loopline.store.destination import Destination
from loopline.store.factory import open_destination
from loopline.store.metadata import MetadataStore

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3

OnChunk = Callable[[int], None]


class IngestPipeline:
    """One job of ``loopline.yaml`` (or built in Python), ready to :meth:`run`."""

    def __init__(
        self,
        config: LooplineConfig,
        job_name: str,
        job: IngestJobConfig | None = None,
        *,
        on_chunk: OnChunk | None = None,
    ) -> None:
        if job is None:
            if job_name not in config.ingest:
                raise ConfigError(
                    f"no ingest job named '{job_name}'",
                    hint=f"known jobs: {', '.join(sorted(config.ingest)) or 'none'}",
                )
            job = config.ingest[job_name]
        self.config = config
        self.job_name = job_name
        self.job = job
        self.on_chunk = on_chunk
        self.last_run: RunRecord | None = None
        contract = config.job_contract(job)
        # Built now so a malformed contract fails before anything is read.
        self._engine = ContractEngine(contract) if contract is not None else None
        self._string_steps = default_string_steps(
            [s for s in job.cleanse if s.step in STRING_STEPS]
        )
        self._value_steps = [s for s in job.cleanse if s.step not in STRING_STEPS]
        self._parse_types, self._null_tokens = parse_types(contract, self._string_steps)
        self._tokens_first = bool(self._string_steps) and isinstance(
            self._string_steps[0], NullTokensStep
        )

    def run(self) -> RunRecord:
        """Ingest until the source is exhausted; the returned record is also in the ledger.

        Raises the :class:`LooplineError` that failed the run, after recording it and
        calling the alert hook.
        """
        store = MetadataStore(self.config.stores.metadata_url, base_dir=self.config.project_dir)
        ledger = RunLedger(store)
        spec = self.config.job_source(self.job)
        source_name = self.job.source if isinstance(self.job.source, str) else self.job_name
        dest_cfg = self.job.destination
        destination = self._open_destination()
        run = ledger.start(
            job=self.job_name,
            source=f"{spec.type}:{source_name}",
            destination=f"{dest_cfg.kind}:{dest_cfg.table}",
            state_before=destination.read_state(self.job_name),
        )
        self.last_run = run
        run.state_after = run.state_before  # unchanged unless a committed chunk moves it
        try:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    self._run_once(run, source_name, destination)
                    break
                except (TransientSourceError, TransientSinkError) as exc:
                    # Whole batches only were committed: resume from the committed state.
                    if attempt == MAX_ATTEMPTS:
                        raise
                    log.warning("transient failure (attempt %d), resuming: %s", attempt, exc)
                    if isinstance(exc, TransientSinkError):
                        destination = self._reopen(destination)
            run.status = "succeeded"
        except LooplineError as exc:
            run.status = "failed"
            run.error = str(exc)
            raise
        finally:
            run.ended_at = datetime.now(UTC)
            ledger.finish(run)
            destination.close()
            store.close()
            if run.status == "failed":
                send_alert(
                    self.config.alerts.webhook_url,
                    title=f"loopline ingest '{self.job_name}' failed",
                    details={
                        "run_id": run.run_id,
                        "error": run.error,
                        "rows_written": run.rows_written,
                    },
                )
        return run

    def _open_destination(self) -> Destination:
        return open_destination(
            self.config.stores, self.job.destination, base_dir=self.config.project_dir
        )

    def _reopen(self, lost: Destination) -> Destination:
        """A fresh connection after one was lost (closing the dead one may fail too)."""
        try:
            lost.close()
        except LooplineError as exc:
            log.debug("closing the lost destination failed: %s", exc)
        return self._open_destination()

    def _run_once(self, run: RunRecord, source_name: str, destination: Destination) -> None:
        source = open_source(
            source_name, self.config.job_source(self.job), base_dir=self.config.project_dir
        )
        if self._parse_types and isinstance(source, PrefersTypes):
            source.prefer_types(self._parse_types, self._null_tokens)
        dest = self.job.destination
        failures: Counter[str] = Counter(run.rule_failures)
        warnings: Counter[str] = Counter(run.warnings)
        committed = 0
        stored = destination.table_schema(dest.table)
        # A destination that reads Arrow string views takes Polars' strings without a copy.
        views = bool(getattr(destination, "accepts_string_views", False))
        for chunk in source.read(destination.read_state(self.job_name)):
            batch_id = lineage.batch_id(self.job_name, chunk.position)
            result = self._process(chunk, batch_id, stored)
            quarantine = result.quarantine.to_arrow() if result.quarantine.height else None
            data = to_arrow(result.data, views=views)
            run.rows_written += destination.commit_batch(
                table=dest.table,
                data=data,
                mode=dest.mode,
                key=dest.key,
                quarantine=quarantine,
                job=self.job_name,
                batch_id=batch_id,
                state=chunk.state,
            )
            # The stored schema changes only when a commit creates the table or adds
            # columns: re-read it then, not once per chunk.
            if stored is None or not set(data.schema.names) <= set(stored.names):
                stored = destination.table_schema(dest.table)
            committed += 1
            read = chunk.num_rows + chunk.num_rejects  # rows the source could not parse count
            run.rows_read += read
            # Rows, not quarantine entries: a row failing two rules has two entries.
            run.rows_quarantined += read - result.data.height - result.deduplicated
            run.rows_deduplicated += result.deduplicated
            failures.update(result.counts)
            warnings.update(result.warnings)
            run.rule_failures, run.warnings = dict(failures), dict(warnings)
            if chunk.state is not None:
                run.state_after = chunk.state
            run.schema_hash = schema_hash(data.schema)
            if self.on_chunk is not None:
                self.on_chunk(read)
            # Let this batch's memory go before the source reads the next one.
            del chunk, result, data, quarantine
        # Nothing new read (e.g. every file already ingested): keep the table as it is.
        if dest.mode == "replace" and committed:
            destination.finish_replace(table=dest.table, job=self.job_name)

    def _process(self, chunk: Chunk, batch_id: str, stored: pa.Schema | None) -> StageResult:
        now = datetime.now(UTC)
        df = pl.from_arrow(chunk.data, rechunk=False)  # no copy of the text
        assert isinstance(df, pl.DataFrame)
        df = df.with_columns(
            pl.lit(chunk.origin, dtype=pl.String).alias(lineage.SOURCE),
            pl.lit(batch_id, dtype=pl.String).alias(lineage.BATCH_ID),
            pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias(lineage.INGESTED_AT),
        )
        stages: list[StageResult] = []
        if chunk.num_rejects and chunk.rejects is not None:
            parsed = rejects_to_quarantine(
                chunk.rejects, source=chunk.origin, batch_id=batch_id, ingested_at=now
            )
            counts = {parse_rule(chunk.rejects): parsed.height}
            stages.append(StageResult(data=_SPENT, quarantine=parsed, counts=counts))
        # Null tokens are matched unstripped in columns whose raw text has no padding.
        unpadded = unpadded_columns(chunk.data) if self._tokens_first else frozenset()
        df = _handed_on(
            stages, apply_steps(df, self._string_steps, phase="string", unpadded=unpadded)
        )
        if self._engine is None:
            self._engine = ContractEngine.inferred(df, stored)
        df = _handed_on(stages, self._engine.coerce(df))
        df = _handed_on(stages, apply_steps(df, self._value_steps, phase="value"))
        checked = self._engine.validate(df, stored)
        del df
        stages.append(checked)
        merged = merge_stages(stages)
        if checked.drift is not None and checked.drift.changed:
            # Always reported, whatever the policy did: a warning per changed column.
            log.warning("schema drift in %s: %s", chunk.origin, checked.drift.summary())
            for event in drift_events(checked.drift):
                merged.warnings[event] = merged.warnings.get(event, 0) + chunk.num_rows
        return merged


_PARSE_TYPES = {
    "float64": pa.float64(),
    "datetime": pa.timestamp("us", "UTC"),  # values without a zone are UTC, as in coercion
    "date": pa.date32(),
}


def parse_types(
    contract: ContractConfig | None, string_steps: list[CleanseStepSpec]
) -> tuple[dict[str, pa.DataType], list[str]]:
    """Columns a source may parse typed (a shortcut: the result is what text → null tokens
    → coercion gives), and the null tokens that apply to them.

    Float64, datetime and date columns of the contract qualify (without a ``format``), when
    one ``null_tokens`` step covers every column and no string step names them (``trim`` of
    every column is fine: a value that parses typed has no spaces to trim); a ``rename`` or
    another all-column string step turns the shortcut off. Whatever does not parse typed
    still goes the text way.

    >>> from loopline.ingest.cleanse import default_string_steps
    >>> contract = ContractConfig.model_validate(
    ...     {"columns": {"x": "float64", "n": "int64", "t": {"type": "date", "format": "%d"}}})
    >>> types, tokens = parse_types(contract, default_string_steps([]))
    >>> types, tokens[:3]
    ({'x': DataType(double)}, ['', 'N/A', 'NA'])
    """
    tokens = [s for s in string_steps if isinstance(s, NullTokensStep)]
    if contract is None or len(tokens) != 1 or tokens[0].columns is not None:
        return {}, []
    named: set[str] = set()  # a step naming a column expects it to be text
    for step in string_steps:
        if isinstance(step, RenameStep):
            return {}, []
        columns = getattr(step, "columns", None)
        if columns is not None:
            named.update(columns)
        elif not isinstance(step, NullTokensStep | TrimStep):
            return {}, []  # e.g. normalize_unicode of every column
    types = {
        name: _PARSE_TYPES[spec.type]
        for name, spec in contract.columns.items()
        if spec.type in _PARSE_TYPES
        and spec.format is None
        and name not in named
        and not lineage.is_lineage(name)
    }
    return types, list(tokens[0].tokens)


def drift_events(drift: SchemaDrift) -> list[str]:
    """Warning names for a batch's drift: ``drift:new_column:c``, ``drift:missing_column:c``,
    ``drift:retyped:c``."""
    return (
        [f"drift:new_column:{c}" for c in drift.new]
        + [f"drift:missing_column:{c}" for c in drift.missing]
        + [f"drift:retyped:{c}" for c in drift.retyped]
    )


_SPENT = pl.DataFrame()
"""The data of a stage whose frame went on to the next stage (see :func:`_handed_on`)."""


def _handed_on(stages: list[StageResult], result: StageResult) -> pl.DataFrame:
    """``result``'s frame, for the next stage; its quarantine rows and counts join
    ``stages`` without it, so a batch's intermediate frames do not all live at once (their
    memory is reused by the next stage: fewer fresh pages, less system time)."""
    stages.append(replace(result, data=_SPENT))
    return result.data


def merge_stages(stages: list[StageResult]) -> StageResult:
    """The last stage's data with every stage's quarantine rows and counts."""
    counts: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for stage in stages:
        counts.update(stage.counts)
        warnings.update(stage.warnings)
    quarantine = pl.concat([s.quarantine for s in stages], how="vertical_relaxed")
    return StageResult(
        data=stages[-1].data,
        quarantine=quarantine,
        counts=dict(counts),
        warnings=dict(warnings),
        deduplicated=sum(s.deduplicated for s in stages),
    )


def to_arrow(frame: pl.DataFrame, *, views: bool = False) -> pa.Table:
    """``frame`` as Arrow: strings as ``large_string``, or as zero-copy string views."""
    if views:
        return frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return frame.to_arrow()


_SAME_TYPE = {"string_view": "large_string", "binary_view": "large_binary"}


def schema_hash(schema: pa.Schema) -> str:
    """A short hash of column names and types, lineage excluded (drift shows as a new hash).

    String views hash as the large strings they hold, so the hash does not depend on how
    the batch was handed over.

    >>> schema_hash(pa.schema([("a", pa.string_view())])) == schema_hash(
    ...     pa.schema([("a", pa.large_string())]))
    True
    """
    text = ";".join(
        f"{f.name}:{_SAME_TYPE.get(str(f.type), f.type)}"
        for f in schema
        if not lineage.is_lineage(f.name)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
