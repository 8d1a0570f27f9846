with

source as (

    select * from {{ source('open311', 'service_requests') }}

),

renamed as (

    select
        ----------  ids
        cast(service_request_id as varchar) as service_request_id,
        cast(service_code as varchar) as service_code,
        cast(address_id as varchar) as address_id,
        cast(account_id as varchar) as requester_token,
        cast(account_id_is_minor as boolean) as requester_is_minor,
        cast(grid_code as varchar) as grid_code,
        cast(community_code as varchar) as community_code,

        ----------  strings
        cast(service_name as varchar) as service_name,
        cast(status as varchar) as status,
        cast(status_notes as varchar) as status_notes,
        cast(description as varchar) as description,
        cast(agency_responsible as varchar) as agency_responsible,
        cast(service_notice as varchar) as service_notice,
        cast(channel as varchar) as channel,
        cast(address as varchar) as address,
        cast(zipcode as varchar) as zipcode,
        cast(media_url as varchar) as media_url,

        ----------  numerics
        cast(lat as double) as latitude,
        cast(long as double) as longitude,

        ----------  timestamps (UTC)
        cast(requested_datetime as timestamptz) as requested_at,
        cast(updated_datetime as timestamptz) as updated_at,
        cast(expected_datetime as timestamptz) as expected_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
