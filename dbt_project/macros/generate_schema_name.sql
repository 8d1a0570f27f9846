{#-
    Use a model's custom schema as-is (`staging`, `marts`) instead of dbt's
    default `<target_schema>_<custom_schema>`. Each environment (dev / ci / prod)
    has its own DuckDB file (WAREHOUSE_PATH), so schemas never collide, and
    consumers (Great Expectations, dashboards) can rely on `marts.<model>`.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
