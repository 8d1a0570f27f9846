"""``python -m ingest.simulator --residents 1000 --seed 42 --port 8765`` — serve the district."""

from __future__ import annotations

import argparse
from datetime import datetime

from ingest.simulator.dirt import DirtConfig
from ingest.simulator.district import DEFAULT_START, TZ
from ingest.simulator.server import serve


def _start(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=TZ)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingest.simulator", description=__doc__)
    parser.add_argument("--residents", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--start", type=_start, default=DEFAULT_START, help="ISO 8601, default %(default)s")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--dropzone", default="data/dropzone/oneroster", help="OneRoster bundle folder")
    parser.add_argument(
        "--advance-every", type=float, default=0.0, help="seconds; > 0 moves the district clock on"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="district seconds per wall-clock second")
    dirt = parser.add_argument_group("dirt (all off by default)")
    dirt.add_argument("--duplicate-rate", type=float, default=0.0)
    dirt.add_argument("--missing-field-rate", type=float, default=0.0)
    dirt.add_argument("--bad-date-rate", type=float, default=0.0)
    dirt.add_argument("--new-column", action="store_true")
    dirt.add_argument("--truncated-page", type=int, default=None)
    dirt.add_argument("--truncated-times", type=int, default=None)
    args = parser.parse_args(argv)
    config = DirtConfig(
        duplicate_rate=args.duplicate_rate,
        missing_field_rate=args.missing_field_rate,
        bad_date_rate=args.bad_date_rate,
        new_column=args.new_column,
        truncated_page=args.truncated_page,
        truncated_times=args.truncated_times,
    )
    serve(
        residents=args.residents,
        seed=args.seed,
        host=args.host,
        port=args.port,
        start=args.start,
        days=args.days,
        dirt=config,
        dropzone=args.dropzone,
        advance_every=args.advance_every,
        speed=args.speed,
    )


if __name__ == "__main__":
    main()
