"""Airflow: ``warehouse`` (quality gates -> dbt build -> quality gates, on raw Assets), ``lake_status``."""

from ingest.dagfactory import build_status_dag, build_warehouse_dag

warehouse = build_warehouse_dag()
lake_status = build_status_dag()
