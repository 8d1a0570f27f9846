"""``ingest`` command line: everything a DAG task does, runnable from a shell without Airflow."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from ingest.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Community data lake: ingest sources, build the warehouse, check quality.",
)

LakeOption = Annotated[
    str | None, typer.Option("--lake", help="Lake URL (directory or s3://bucket/prefix); default: LAKE_URL")
]


def _settings(lake: str | None) -> Settings:
    settings = load_settings()
    return settings.with_lake(lake) if lake else settings


def _when(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 datetime", param_hint=name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    import os

    from ingest.airflow_env import CHECKOUT

    demo_keys = CHECKOUT / ".secrets" / "demo-keys.env"
    keyed = any(os.environ.get(v) for v in ("CDL_PSEUDONYM_KEY", "CDL_KEYS_FILE", "CDL_KEYS_CONN_ID"))
    if not keyed and demo_keys.exists() and load_settings().env == "local":
        os.environ["CDL_KEYS_FILE"] = str(demo_keys)  # the key `make run` created on this machine
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def sources() -> None:
    """List the source registry: each source, its standard and datasets."""
    from ingest.contracts import load_registry

    for src in load_registry().sources:
        typer.echo(f"{src.name}: {src.title}\n  standard: {src.standard}\n  owner: {src.owner}")
        for ds in src.datasets:
            typer.echo(f"  - {ds.name} ({ds.disposition}, key {', '.join(ds.primary_key) or '-'})")


@app.command()
def classify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The classification register: every column of every contract, its level and protection."""
    from ingest.contracts import load_registry

    rows = [
        {
            "source": src.name,
            "dataset": ds.name,
            "column": col.name,
            "type": col.type,
            "level": col.classification,
            "category": col.category or "-",
            "protection": col.protect or "-",
            "check": col.validate_as or "-",
            "owner": src.owner,
            "purpose": src.purpose,
        }
        for src in load_registry().sources
        for ds in src.datasets
        for col in ds.columns
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    keys = ["source", "dataset", "column", "type", "level", "category", "protection", "check"]
    widths = [max(len(k), *(len(r[k]) for r in rows)) for k in keys]
    typer.echo("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(row[k].ljust(w) for k, w in zip(keys, widths, strict=True)))


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="source name from the registry, e.g. open311")],
    base_url: Annotated[str | None, typer.Option(help="override the source's base URL")] = None,
    since: Annotated[
        str | None, typer.Option(help="start of the window (ISO 8601); default: saved cursor")
    ] = None,
    until: Annotated[str | None, typer.Option(help="end of the window (ISO 8601); default: now")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="only these datasets")] = None,
    run_id: Annotated[str | None, typer.Option(help="run id recorded with the data")] = None,
    lake: LakeOption = None,
) -> None:
    """Load one source into the lake (incremental from its saved cursor)."""
    from ingest.pipeline import run_source

    reports = run_source(
        source,
        since=_when(since, "--since"),
        until=_when(until, "--until") or datetime.now(UTC),
        base_url=base_url,
        datasets=dataset,
        run_id=run_id,
        settings=_settings(lake),
    )
    for report in reports:
        typer.echo(report.summary())


@app.command()
def replay(
    source: Annotated[str, typer.Argument(help="source name from the registry")],
    from_date: Annotated[str, typer.Option("--from", help="first load date (YYYY-MM-DD)")],
    to_date: Annotated[str, typer.Option("--to", help="last load date (YYYY-MM-DD)")],
    dataset: Annotated[list[str] | None, typer.Option(help="only these datasets")] = None,
    rebuild: Annotated[
        bool, typer.Option(help="drop the raw table first and rebuild it from landing")
    ] = False,
    lake: LakeOption = None,
) -> None:
    """Re-load raw tables from the landing zone without calling the source."""
    from ingest.contracts import load_registry
    from ingest.pipeline import replay_dataset

    src = load_registry().source(source)
    for ds in [src.dataset(n) for n in dataset] if dataset else src.datasets:
        reports = replay_dataset(
            src, ds, from_date=from_date, to_date=to_date, rebuild=rebuild, settings=_settings(lake)
        )
        typer.echo(f"{source}.{ds.name}: {len(reports)} run(s) replayed")
        for report in reports:
            typer.echo("  " + report.summary())


@app.command()
def erase(
    actor: Annotated[str, typer.Option(help="who is carrying out the request (recorded in the audit)")],
    id_number: Annotated[str | None, typer.Option(help="the resident's ID number")] = None,
    token: Annotated[str | None, typer.Option(help="or the resident's pseudonym token")] = None,
    purpose: Annotated[str, typer.Option(help="recorded in the audit")] = "erasure request (PIPL art. 47)",
    no_build: Annotated[bool, typer.Option("--no-build", help="do not rebuild the warehouse")] = False,
    lake: LakeOption = None,
) -> None:
    """Erase one resident from raw tables, landing, quarantine, identity zone and warehouse."""
    from dataclasses import asdict

    from ingest.erasure import erase_resident

    report = erase_resident(
        id_number=id_number,
        token=token,
        actor=actor,
        purpose=purpose,
        settings=_settings(lake),
        rebuild_warehouse=not no_build,
    )
    typer.echo(json.dumps(asdict(report), indent=2))


@app.command("purge-landing")
def purge_landing(
    source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
    today: Annotated[str | None, typer.Option(help="reference date (YYYY-MM-DD); default today")] = None,
    lake: LakeOption = None,
) -> None:
    """Delete landing payloads and quarantine files older than each source's landing_retention."""
    from dataclasses import asdict
    from datetime import date

    from ingest.retention import purge_expired

    report = purge_expired(
        _settings(lake), today=date.fromisoformat(today) if today else None, sources=source
    )
    typer.echo(json.dumps(asdict(report), indent=2))


@app.command()
def publish(
    dsn: Annotated[str | None, typer.Option(help="PostgreSQL serving database; default SERVING_DSN")] = None,
    lake: LakeOption = None,
) -> None:
    """Publish the marts into the PostgreSQL serving layer (roles, schemas, row-level security)."""
    from ingest.serving import publish as publish_marts

    for table, rows in publish_marts(_settings(lake), dsn).tables.items():
        typer.echo(f"{table}: {rows} rows")


@app.command("grant-staff")
def grant_staff(
    user: Annotated[str, typer.Argument(help="login user of a residents' committee member")],
    community: Annotated[str, typer.Argument(help="community code the user may see")],
    dsn: Annotated[str | None, typer.Option(help="PostgreSQL serving database; default SERVING_DSN")] = None,
) -> None:
    """Give a committee member read access to their own community's rows (and open data)."""
    from ingest.serving import grant_staff as grant
    from ingest.serving import serving_dsn

    grant(dsn or serving_dsn(), user, community)
    typer.echo(f"{user}: community_staff, limited to {community}")


@app.command()
def status(lake: LakeOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per dataset: rows, cursor, last successful run, quarantine, freshness against the SLA."""
    from dataclasses import asdict

    from ingest.status import HEADERS, collect

    rows = collect(_settings(lake))
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = [HEADERS, *[r.as_row() for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


@app.command()
def build(lake: LakeOption = None, select: Annotated[str | None, typer.Option()] = None) -> None:
    """dbt build the warehouse from the lake and publish it atomically."""
    from ingest.warehouse import build as dbt_build

    typer.echo(dbt_build(_settings(lake), select=select).line())


@app.command()
def check(
    suite: Annotated[list[str] | None, typer.Argument(help="suite names; default: all")] = None,
    lake: LakeOption = None,
) -> None:
    """Run Great Expectations suites; exit 1 if a blocking expectation fails."""
    from ingest.quality import QualityGateFailed, load_suites, run_suite

    names = suite or [s.suite for s in load_suites()]
    failed = False
    for name in names:
        try:
            typer.echo(run_suite(name, _settings(lake)).summary())
        except QualityGateFailed as exc:
            typer.echo(str(exc), err=True)
            failed = True
    raise typer.Exit(1 if failed else 0)


@app.command()
def setup() -> None:
    """Install the bundled DuckDB extensions (offline) and create the local data folders."""
    from ingest.duck import install_extensions

    settings = load_settings()
    done = install_extensions()
    typer.echo(f"duckdb extensions installed: {', '.join(done) or 'already present'}")
    for key, value in settings.describe().items():
        typer.echo(f"{key:12} {value}")


@app.command()
def simulator(
    residents: Annotated[int, typer.Option(help="district size")] = 1000,
    seed: Annotated[int, typer.Option()] = 42,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8765,
    dropzone: Annotated[str, typer.Option(help="folder for OneRoster bundles")] = "data/dropzone/oneroster",
    advance_every: Annotated[
        float, typer.Option(help="seconds; > 0 moves the district clock on in real time")
    ] = 0.0,
    speed: Annotated[float, typer.Option(help="district seconds per wall-clock second")] = 1.0,
) -> None:
    """Feed the synthetic demo district into all eight source systems (Ctrl-C stops it).

    HTTP standards on HOST:PORT, the registry in PostgreSQL and the property system in MariaDB
    (SIM_REGISTRY_DSN / SIM_PROPERTY_DSN), OneRoster bundles in the drop folder.
    """
    from ingest.simulator.server import serve

    serve(
        residents=residents,
        seed=seed,
        host=host,
        port=port,
        dropzone=dropzone,
        advance_every=advance_every,
        speed=speed,
    )


@app.command()
def demo(
    residents: Annotated[int, typer.Option(help="district size")] = 2000,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """The whole pipeline through Airflow on the demo district, then a summary (``make run``)."""
    from ingest.demo import run_demo

    raise typer.Exit(run_demo(residents=residents, seed=seed))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
