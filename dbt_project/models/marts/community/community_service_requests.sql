-- One row per request, for the staff of the community it belongs to (row-level security in the
-- PostgreSQL serving layer limits each community's staff to its own rows). Pseudonymous: no
-- requester identifier of any kind.
with

requests as (

    select * from {{ ref('stg_open311__service_requests') }}

),

final as (

    select
        service_request_id,
        community_code,
        grid_code,
        service_code,
        service_name,
        agency_responsible,
        status,
        address,
        requested_at,
        updated_at,
        expected_at,
        coalesce(status = 'closed' and updated_at <= expected_at, false) as closed_within_sla

    from requests

    where community_code is not null

)

select * from final
