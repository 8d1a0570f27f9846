{#-
    Residents' requests per grid, service type and month, for the open-data portal.
    Quasi-identifiers: grid, service type, month. Every published cell counts at least
    var('open_data_k') distinct requesters; smaller cells are folded into one
    '(other)' row per grid and month, which is itself published only if it reaches k.
-#}

with

requests as (

    select * from {{ ref('stg_open311__service_requests') }}

),

services as (

    select * from {{ ref('stg_open311__services') }}

),

tagged as (

    select
        grid_code,
        community_code,
        service_code,
        requester_token,
        cast(
            date_trunc(
                'month', timezone('{{ var("local_time_zone") }}', requested_at)
            ) as date
        ) as request_month

    from requests

    where grid_code is not null

),

cells as (

    select
        grid_code,
        community_code,
        service_code,
        request_month,
        count(*) as requests,
        count(distinct requester_token) as requesters

    from tagged

    group by grid_code, community_code, service_code, request_month

),

published_cells as (

    select
        grid_code,
        community_code,
        service_code,
        request_month,
        requests,
        requesters

    from cells

    where requesters >= {{ var('open_data_k') }}

),

folded as (

    select
        tagged.grid_code,
        tagged.community_code,
        '(other)' as service_code,
        tagged.request_month,
        count(*) as requests,
        count(distinct tagged.requester_token) as requesters

    from tagged

    inner join cells
        on
            tagged.grid_code = cells.grid_code
            and tagged.service_code = cells.service_code
            and tagged.request_month = cells.request_month

    where cells.requesters < {{ var('open_data_k') }}

    group by tagged.grid_code, tagged.community_code, tagged.request_month

    having count(distinct tagged.requester_token) >= {{ var('open_data_k') }}

),

unioned as (

    select * from published_cells
    union all
    select * from folded

),

final as (

    select
        unioned.grid_code,
        unioned.community_code,
        unioned.service_code,
        unioned.request_month,
        unioned.requests,
        unioned.requesters,
        coalesce(services.service_name, '其他（小格合并）') as service_name

    from unioned

    left join services
        on unioned.service_code = services.service_code

)

select * from final
