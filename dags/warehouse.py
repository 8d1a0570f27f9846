"""Airflow: the ``warehouse`` DAG — raw quality gates -> dbt build -> mart quality gates, on raw Assets."""

from ingest.dagfactory import build_warehouse_dag

warehouse = build_warehouse_dag()
