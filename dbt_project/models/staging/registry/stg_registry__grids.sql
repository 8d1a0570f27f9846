with

source as (

    select * from {{ source('registry', 'grids') }}

),

renamed as (

    select
        ----------  ids
        cast(grid_id as varchar) as grid_code,
        cast(community_id as varchar) as community_code,
        cast(street_id as varchar) as street_code,
        cast(grid_worker_name as varchar) as grid_worker_token,

        ----------  strings
        cast(grid_name as varchar) as grid_name,
        cast(community_name as varchar) as community_name,
        cast(committee as varchar) as residents_committee,
        cast(street_name as varchar) as street_name,
        cast(street_office as varchar) as street_office,
        cast(zipcode as varchar) as zipcode,

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
