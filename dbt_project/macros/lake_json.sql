{#-
    Read JSON records the ingest package keeps in the lake (e.g. audit/runs/*/*/*.json) as a
    relation with the given typed columns. With no lake (LAKE_URL unset) or no files yet, an
    empty relation with the same columns, so models and their contracts still build.
-#}
{% macro lake_json(relative_glob, columns) %}
    {%- set lake = env_var('LAKE_URL', '') | trim -%}
    {%- set pattern = lake ~ '/' ~ relative_glob -%}
    {%- set found = 0 -%}
    {%- if execute and lake != '' -%}
        {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
    {%- endif -%}
    {%- if found > 0 %}
        select
        {%- for name, type in columns.items() %}
            cast({{ adapter.quote(name) }} as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
        {%- endfor %}
        from read_json(
            '{{ pattern }}',
            union_by_name = true,
            columns = { {%- for name, type in columns.items() -%} '{{ name }}': '{{ type }}'{{ ", " if not loop.last }}{%- endfor -%} }
        )
    {%- else %}
        select
        {%- for name, type in columns.items() %}
            cast(null as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
        {%- endfor %}
        where false
    {%- endif %}
{% endmacro %}
