{#-
    Expose the Iceberg tables of the lake's SQL catalog as DuckDB views.

    Runs as `on-run-start`. Reads the pyiceberg SqlCatalog table `iceberg_tables`
    (catalog_name, table_namespace, table_name, metadata_location, ...) and, for
    every table in the namespaces listed in var('iceberg_namespaces'), runs

        create or replace view <namespace>.<table_name> as
        select * from iceberg_scan('<metadata_location>')

    Each view pins the snapshot that was current when the run started, so every
    model in one `dbt build` reads the same data.

    The catalog URI comes from env ICEBERG_CATALOG_URI (the same variable the
    ingest package uses): SQLite, or PostgreSQL in production. An empty
    or missing catalog is not an error (the schemas are created, no views).
-#}
{% macro register_iceberg_sources() %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}

    {%- set catalog_uri = env_var('ICEBERG_CATALOG_URI', '') | trim -%}
    {%- set catalog_name = var('iceberg_catalog_name', 'lake') -%}
    {%- set namespaces = var('iceberg_namespaces', ['raw']) -%}

    {%- for namespace in namespaces -%}
        {%- do run_query('create schema if not exists ' ~ adapter.quote(namespace)) -%}
    {%- endfor -%}

    {%- if catalog_uri == '' -%}
        {{ exceptions.raise_compiler_error(
            "ICEBERG_CATALOG_URI is not set. Point it at the lake's pyiceberg SQL catalog, "
            ~ "e.g. sqlite:////abs/path/catalog.sqlite (the value the ingest package uses)."
        ) }}
    {%- endif -%}

    {%- set catalog_tables = _iceberg_catalog_tables(catalog_uri, catalog_name, namespaces) -%}

    {%- for row in catalog_tables -%}
        {%- set view_sql -%}
            create or replace view {{ adapter.quote(row['table_namespace']) }}.{{ adapter.quote(row['table_name']) }} as
            select * from iceberg_scan('{{ row["metadata_location"] | replace("'", "''") }}')
        {%- endset -%}
        {%- do run_query(view_sql) -%}
    {%- endfor -%}

    {%- do log(
        'register_iceberg_sources: ' ~ (catalog_tables | length) ~ ' Iceberg table(s) exposed from catalog '
        ~ catalog_name ~ ' in schema(s) ' ~ (namespaces | join(', ')),
        info=true
    ) -%}

    {#- Nothing left for the hook itself to execute. -#}
    {{ return('') }}
{% endmacro %}


{#-
    Rows (table_namespace, table_name, metadata_location) of the catalog's
    `iceberg_tables`, for one catalog name and the given namespaces.
-#}
{% macro _iceberg_catalog_tables(catalog_uri, catalog_name, namespaces) %}
    {%- if catalog_uri.startswith('sqlite:///') -%}
        {#- sqlite:////abs/path.sqlite -> /abs/path.sqlite ; sqlite:///rel.sqlite -> rel.sqlite -#}
        {%- set sqlite_path = catalog_uri[('sqlite:///' | length):].split('?')[0] -%}
        {%- set sqlite_path_sql = sqlite_path | replace("'", "''") -%}

        {#- A catalog that has never been written to may not exist yet. -#}
        {%- set catalog_file = run_query("select file from glob('" ~ sqlite_path_sql ~ "')") -%}
        {%- if catalog_file.rows | length == 0 -%}
            {%- do log('register_iceberg_sources: no catalog file at ' ~ sqlite_path ~ ' yet; no views created', info=true) -%}
            {{ return([]) }}
        {%- endif -%}

        {%- set catalog_table = run_query(
            "select name from sqlite_scan('" ~ sqlite_path_sql ~ "', 'sqlite_master') "
            ~ "where type = 'table' and name = 'iceberg_tables'"
        ) -%}
        {%- if catalog_table.rows | length == 0 -%}
            {%- do log('register_iceberg_sources: catalog ' ~ sqlite_path ~ ' has no iceberg_tables table yet; no views created', info=true) -%}
            {{ return([]) }}
        {%- endif -%}

        {{ return(_iceberg_tables_rows("sqlite_scan('" ~ sqlite_path_sql ~ "', 'iceberg_tables')", catalog_name, namespaces)) }}

    {%- elif catalog_uri.startswith('postgresql') or catalog_uri.startswith('postgres') -%}
        {#- postgresql+psycopg2://user:pw@host:port/db (SQLAlchemy) -> postgresql://user@host:port/db (libpq).
            The password is left out on purpose: hook SQL lands in dbt's logs. libpq takes it from
            PGPASSWORD, which the ingest package sets from the catalog URI when it runs dbt. -#}
        {%- set rest = catalog_uri.split('://', 1)[1].split('?')[0] -%}
        {%- if '@' in rest -%}
            {%- set credentials, location = rest.rsplit('@', 1) -%}
            {%- set rest = credentials.split(':')[0] ~ '@' ~ location -%}
        {%- endif -%}
        {%- set dsn_sql = ('postgresql://' ~ rest) | replace("'", "''") -%}
        {%- do run_query("attach if not exists '" ~ dsn_sql ~ "' as iceberg_catalog (type postgres, read_only)") -%}
        {%- set probe = run_query(
            "select count(*) from duckdb_tables() "
            ~ "where database_name = 'iceberg_catalog' and table_name = 'iceberg_tables'"
        ) -%}
        {%- if probe.columns[0].values()[0] == 0 -%}
            {%- do run_query("detach iceberg_catalog") -%}
            {%- do log('register_iceberg_sources: the PostgreSQL catalog has no iceberg_tables table yet; no views created', info=true) -%}
            {{ return([]) }}
        {%- endif -%}

        {%- set rows = _iceberg_tables_rows('iceberg_catalog.public.iceberg_tables', catalog_name, namespaces) -%}
        {%- do run_query("detach iceberg_catalog") -%}
        {{ return(rows) }}

    {%- else -%}
        {{ exceptions.raise_compiler_error(
            "Unsupported ICEBERG_CATALOG_URI scheme in '" ~ catalog_uri.split('://')[0]
            ~ "://...': expected sqlite:///<path> or postgresql+psycopg2://...."
        ) }}
    {%- endif -%}
{% endmacro %}


{#- The catalog's rows for one catalog name and the given namespaces, read from `relation`
    (the `iceberg_tables` table, however the catalog's database is reached). -#}
{% macro _iceberg_tables_rows(relation, catalog_name, namespaces) %}
    {%- set namespace_list = [] -%}
    {%- for namespace in namespaces -%}
        {%- do namespace_list.append("'" ~ (namespace | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {%- set tables_sql -%}
        select
            table_namespace,
            table_name,
            metadata_location
        from {{ relation }}
        where
            catalog_name = '{{ catalog_name | replace("'", "''") }}'
            and table_namespace in ({{ namespace_list | join(', ') }})
            and coalesce(iceberg_type, 'TABLE') = 'TABLE'
            and metadata_location is not null
        order by table_namespace, table_name
    {%- endset -%}
    {{ return(run_query(tables_sql).rows) }}
{% endmacro %}
