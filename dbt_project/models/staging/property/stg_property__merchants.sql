with

source as (

    select * from {{ source('property', 'merchants') }}

),

renamed as (

    select
        ----------  ids
        cast(uscc as varchar) as uscc,
        cast(building_id as varchar) as building_id,
        cast(grid_id as varchar) as grid_code,
        cast(community_id as varchar) as community_code,

        ----------  strings
        cast(merchant_name as varchar) as merchant_name,
        cast(kind as varchar) as organisation_kind,
        cast(industry as varchar) as industry,
        cast(phone as varchar) as service_phone,
        cast(licence_status as varchar) as licence_status,

        ----------  dates
        cast(registered_on as date) as registered_on,

        ----------  booleans
        cast(deleted_at is not null as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(updated_at as timestamptz) as updated_at,
        cast(deleted_at as timestamptz) as deleted_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
