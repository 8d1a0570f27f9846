with

service_requests as (

    select * from {{ ref('stg_open311__service_requests') }}

),

services as (

    select * from {{ ref('stg_open311__services') }}

),

requests_measured as (

    select
        service_request_id,
        service_code,
        service_name,
        agency_responsible,
        requested_at,
        cast(
            timezone('{{ var("local_time_zone") }}', requested_at) as date
        ) as request_date,
        status = 'closed' as is_closed,
        status = 'open' as is_open,
        (epoch(updated_at) - epoch(requested_at)) / 3600.0 as hours_to_update,
        coalesce(
            status = 'closed' and updated_at <= expected_at, false
        ) as is_closed_within_sla

    from service_requests

),

daily_counts as (

    select
        service_code,
        request_date,
        arg_max(service_name, requested_at) as latest_service_name,
        count(*) as requests_received,
        count(*) filter (where is_closed) as requests_closed,
        count(*) filter (where is_open) as requests_open,
        median(hours_to_update) filter (
            where is_closed
        ) as median_hours_to_close,
        median(hours_to_update) filter (
            where hours_to_update > 0
        ) as median_hours_to_update,
        count(*) filter (where is_closed_within_sla) as closed_within_sla

    from requests_measured

    group by service_code, request_date

),

agency_counts as (

    select
        service_code,
        request_date,
        agency_responsible,
        count(*) as agency_requests

    from requests_measured

    where agency_responsible is not null

    group by service_code, request_date, agency_responsible

),

ranked_agencies as (

    select
        service_code,
        request_date,
        agency_responsible,
        row_number() over (
            partition by service_code, request_date
            order by agency_requests desc, agency_responsible asc
        ) as agency_rank

    from agency_counts

),

main_agencies as (

    select
        service_code,
        request_date,
        agency_responsible

    from ranked_agencies

    where agency_rank = 1

),

daily_summaries as (

    select
        daily_counts.service_code,
        daily_counts.request_date,
        main_agencies.agency_responsible,
        daily_counts.requests_received,
        daily_counts.requests_closed,
        daily_counts.requests_open,
        daily_counts.median_hours_to_close,
        daily_counts.median_hours_to_update,
        daily_counts.closed_within_sla,
        coalesce(
            services.service_name, daily_counts.latest_service_name
        ) as service_name,
        cast(daily_counts.closed_within_sla as double)
        / nullif(daily_counts.requests_closed, 0) as share_closed_within_sla

    from daily_counts

    left join services
        on daily_counts.service_code = services.service_code

    left join main_agencies
        on
            daily_counts.service_code = main_agencies.service_code
            and daily_counts.request_date = main_agencies.request_date

),

final as (

    select
        service_code,
        request_date,
        service_name,
        agency_responsible,
        requests_received,
        requests_closed,
        requests_open,
        median_hours_to_close,
        median_hours_to_update,
        closed_within_sla,
        share_closed_within_sla

    from daily_summaries

)

select * from final
