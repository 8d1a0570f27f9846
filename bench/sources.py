"""``make bench``: extraction throughput and peak memory of every source, at two district sizes.

For each scale a district is generated and fed into all eight systems (HTTP standards on
loopback, PostgreSQL, MariaDB, a OneRoster drop folder); each source is then loaded into a
fresh lake by ``ingest run`` in a child process of its own, whose wall time and peak RSS are
recorded. Results go to ``bench/results/sources.json`` (and a table on stdout).

Machines are noisy: compare ratios within one run, not absolute numbers across machines. The
claim under test is that memory does not grow with source size (connectors stream in bounded
batches), so ``rss_ratio`` should stay near 1 while ``rows_ratio`` is ~ the scale ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.contracts import load_registry  # noqa: E402
from ingest.privacy import ensure_demo_keys  # noqa: E402
from ingest.simulator import District, property_db, registry_db  # noqa: E402
from ingest.simulator.feeds import DistrictFeeds  # noqa: E402

CHILD = """
import json, resource, sys
from datetime import datetime
from ingest.pipeline import run_source
reports = run_source(sys.argv[1], until=datetime.fromisoformat(sys.argv[2]), base_url=sys.argv[3])
print(json.dumps({
    "received": sum(r.records_received for r in reports),
    "inserted": sum(r.rows_inserted for r in reports),
    "quarantined": sum(r.quarantined for r in reports),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def bench_scale(residents: int, workdir: Path, env: dict[str, str]) -> list[dict]:
    district = District.generate(residents=residents, seed=42)
    suffix = uuid.uuid4().hex[:8]
    lake = workdir / f"lake-{residents}"
    child_env = {**env, "LAKE_URL": str(lake), "WAREHOUSE_PATH": str(workdir / f"wh-{residents}.duckdb")}
    results = []
    feeds = DistrictFeeds(
        district,
        dropzone=workdir / f"dropzone-{residents}",
        registry_dsn=f"postgresql://postgres@127.0.0.1:5432/cdl_bench_registry_{suffix}",
        property_dsn=f"mysql://root@127.0.0.1:3306/cdl_bench_property_{suffix}",
    )
    try:
        with feeds:
            urls = feeds.source_env()
            until = datetime.now(UTC).isoformat()
            for source in load_registry().sources:
                started = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, source.name, until, urls[source.connection.url_env]],
                    env=child_env,
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=ROOT,
                )
                seconds = time.perf_counter() - started
                if proc.returncode != 0:
                    results.append(
                        {"residents": residents, "source": source.name, "error": proc.stderr[-800:]}
                    )
                    print(f"{residents:>7} {source.name:10} FAILED: {proc.stderr[-300:]}", flush=True)
                    continue
                row = {"residents": residents, "source": source.name, "seconds": round(seconds, 2)}
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                row["rows_per_s"] = round(row["received"] / seconds, 1) if seconds else None
                results.append(row)
                print(
                    f"{residents:>7} {source.name:10} {row['received']:>8} rows {seconds:7.2f} s "
                    f"{row['rows_per_s']:>9} rows/s  peak RSS {row['peak_rss_mb']:>7} MB",
                    flush=True,
                )
    finally:
        registry_db.drop_database(feeds.registry_dsn)
        property_db.drop_database(feeds.property_dsn)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="2000,10000", help="comma-separated district sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sources.json")
    args = parser.parse_args(argv)
    scales = [int(x) for x in args.scales.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="cdl-bench-"))
    env = dict(os.environ)
    env["CDL_KEYS_FILE"] = str(ensure_demo_keys(workdir / "keys.env"))
    env["PYTHONPATH"] = str(ROOT)
    rows = [row for n in scales for row in bench_scale(n, workdir, env)]
    small, large = scales[0], scales[-1]
    ratios = {}
    for source in {r["source"] for r in rows}:
        a = next(
            (r for r in rows if r["source"] == source and r["residents"] == small and "error" not in r), None
        )
        b = next(
            (r for r in rows if r["source"] == source and r["residents"] == large and "error" not in r), None
        )
        if a and b and a["received"]:
            ratios[source] = {
                "rows_ratio": round(b["received"] / a["received"], 2),
                "time_ratio": round(b["seconds"] / a["seconds"], 2),
                "rss_ratio": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "scales": scales,
        "runs": rows,
        "ratios_large_vs_small": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nratios {large} vs {small} residents (rows / time / peak RSS):")
    for source, r in sorted(ratios.items()):
        print(f"  {source:10} rows x{r['rows_ratio']:<6} time x{r['time_ratio']:<6} RSS x{r['rss_ratio']}")
    print(f"written to {args.out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
