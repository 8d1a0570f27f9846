{#-
    dbt_utils-free equivalent of dbt_utils.unique_combination_of_columns
    (hub packages cannot be downloaded in this environment).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    {%- set column_list = combination_of_columns | join(', ') -%}

    with

    validation as (

        select
            {{ column_list }},
            count(*) as n_records

        from {{ model }}

        group by {{ column_list }}

    ),

    final as (

        select * from validation

        where n_records > 1

    )

    select * from final

{% endtest %}
