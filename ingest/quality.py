"""Great Expectations gates, with suites as code in ``expectations/suites/*.yml``.

Each suite file names its target (a raw Iceberg table or a warehouse relation) and lists
expectations, each ``blocking`` (a failure fails the task) or ``warning`` (reported only).
GX 1.x validates the data as a pandas DataFrame in an ephemeral context; the result summary is
kept in the lake under ``audit/quality/``. The GX provider stopped failing tasks on failed
validations, so :func:`run_suite` raises :class:`QualityGateFailed` itself.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from ingest.settings import Settings, load_settings

log = logging.getLogger(__name__)


def suites_dir() -> Path:
    """``expectations/suites`` of the checkout (``EXPECTATIONS_DIR`` overrides)."""
    override = os.environ.get("EXPECTATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "expectations" / "suites"


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    kwargs: dict[str, Any] = {}
    severity: Literal["blocking", "warning"] = "blocking"
    why: str = ""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["raw", "warehouse"]
    table: str | None = None
    relation: str | None = None


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str
    target: Target
    expectations: list[Expectation]


class QualityGateFailed(RuntimeError):
    pass


@dataclass
class QualityResult:
    suite: str
    success: bool
    rows: int
    evaluated: int
    blocking_failed: list[str] = field(default_factory=list)
    warnings_failed: list[str] = field(default_factory=list)
    checked_at: str = ""

    def summary(self) -> str:
        state = "passed" if self.success else "FAILED"
        text = f"{self.suite}: {state} ({self.evaluated} expectations on {self.rows} rows"
        if self.warnings_failed:
            text += f"; {len(self.warnings_failed)} warning(s)"
        return text + ")"


def load_suites(directory: Path | None = None) -> list[Suite]:
    directory = directory or suites_dir()
    suites = []
    for path in sorted(directory.glob("*.yml")):
        with path.open(encoding="utf-8") as fh:
            suites.append(Suite.model_validate(yaml.safe_load(fh)))
    return suites


def suite_by_name(name: str) -> Suite:
    for suite in load_suites():
        if suite.suite == name:
            return suite
    raise KeyError(f"no expectation suite {name!r} in {suites_dir()}")


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def validate_dataframe(suite: Suite, df: Any) -> QualityResult:
    """Run one suite on a DataFrame with GX; return what passed and failed, per severity."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    safe = re.sub(r"[^A-Za-z0-9_]", "_", suite.suite)
    asset = context.data_sources.add_pandas(f"{safe}_source").add_dataframe_asset(name=safe)
    batch = asset.add_batch_definition_whole_dataframe("whole")
    definitions = []
    by_severity: dict[str, list[Expectation]] = {"blocking": [], "warning": []}
    for exp in suite.expectations:
        by_severity[exp.severity].append(exp)
    for severity, expectations in by_severity.items():
        if not expectations:
            continue
        gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{safe}.{severity}"))
        for exp in expectations:
            cls = getattr(gx.expectations, _class_name(exp.type), None)
            if cls is None:
                raise ValueError(f"suite {suite.suite}: unknown expectation type {exp.type!r}")
            gx_suite.add_expectation(cls(**exp.kwargs, meta={"severity": severity, "why": exp.why}))
        definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{safe}.{severity}", data=batch, suite=gx_suite)
            )
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=f"{safe}.checkpoint", validation_definitions=definitions)
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": df})

    result = QualityResult(
        suite=suite.suite, success=True, rows=len(df), evaluated=0, checked_at=datetime.now(UTC).isoformat()
    )
    for run_result in outcome.run_results.values():
        for res in run_result.results:
            result.evaluated += 1
            if res.success:
                continue
            cfg = res.expectation_config
            severity = (cfg.meta or {}).get("severity", "blocking")
            unexpected = (res.result or {}).get("unexpected_count")
            text = f"{cfg.type}({', '.join(f'{k}={v}' for k, v in cfg.kwargs.items() if k != 'batch_id')})"
            if unexpected is not None:
                text += f": {unexpected} unexpected"
            (result.blocking_failed if severity == "blocking" else result.warnings_failed).append(text)
    result.success = not result.blocking_failed
    return result


def load_target(suite: Suite, settings: Settings) -> Any:
    """The data a suite checks, as a pandas DataFrame."""
    if suite.target.kind == "raw":
        from ingest.lake.tables import RAW_NAMESPACE, open_catalog

        table = open_catalog(settings).load_table((RAW_NAMESPACE, suite.target.table))
        return table.scan().to_pandas()
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(f"select * from {suite.target.relation}").df()
    finally:
        con.close()


def run_suite(name: str, settings: Settings | None = None, *, raise_on_failure: bool = True) -> QualityResult:
    """Validate one suite's target; raise :class:`QualityGateFailed` when a blocking expectation fails."""
    from ingest.lake.storage import LakeStorage

    settings = settings or load_settings()
    suite = suite_by_name(name)
    result = validate_dataframe(suite, load_target(suite, settings))
    stamp = result.checked_at.replace(":", "").replace("-", "")[:15]
    LakeStorage(settings).write_json(f"audit/quality/{suite.suite}/{stamp}.json", asdict(result))
    for warning in result.warnings_failed:
        log.warning("%s: warning expectation failed: %s", suite.suite, warning)
    log.info(result.summary())
    if raise_on_failure and not result.success:
        raise QualityGateFailed(
            f"quality gate {suite.suite} failed on {len(result.blocking_failed)} blocking expectation(s): "
            + "; ".join(result.blocking_failed)
            + ". Downstream steps were not run. Inspect the rows named above "
            "(quarantine/ and audit/quality/ in the lake) and fix the source or the contract."
        )
    return result
