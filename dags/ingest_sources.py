"""Airflow: one ``ingest_<source>`` DAG per source in the registry (ingest/config/sources/*.yml)."""

from ingest.dagfactory import ingest_dags

globals().update(ingest_dags())
