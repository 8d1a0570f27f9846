-- Every staged service request is counted exactly once in the daily mart:
-- the mart's requests_received, requests_closed and requests_open add up to
-- the staging totals. Returns one row (the mismatch) when they do not.

with

staged_requests as (

    select * from {{ ref('stg_open311__service_requests') }}

),

daily_mart as (

    select * from {{ ref('mart_service_requests_daily') }}

),

staged_totals as (

    select
        count(*) as requests_received,
        count(*) filter (where status = 'closed') as requests_closed,
        count(*) filter (where status = 'open') as requests_open

    from staged_requests

),

mart_totals as (

    select
        coalesce(sum(requests_received), 0) as requests_received,
        coalesce(sum(requests_closed), 0) as requests_closed,
        coalesce(sum(requests_open), 0) as requests_open

    from daily_mart

),

final as (

    select
        staged_totals.requests_received as staged_requests_received,
        mart_totals.requests_received as mart_requests_received,
        staged_totals.requests_closed as staged_requests_closed,
        mart_totals.requests_closed as mart_requests_closed,
        staged_totals.requests_open as staged_requests_open,
        mart_totals.requests_open as mart_requests_open

    from staged_totals
    cross join mart_totals

    where
        staged_totals.requests_received != mart_totals.requests_received
        or staged_totals.requests_closed != mart_totals.requests_closed
        or staged_totals.requests_open != mart_totals.requests_open

)

select * from final
