with

source as (

    select * from {{ source('opendata', 'grid_statistics') }}

),

renamed as (

    select
        ----------  ids
        cast(grid_code as varchar) as grid_code,
        cast(datastore_id as bigint) as datastore_row_id,
        cast(community_code as varchar) as community_code,
        cast(street_code as varchar) as street_code,

        ----------  strings
        cast(grid_name as varchar) as grid_name,
        cast(community_name as varchar) as community_name,
        cast(street_name as varchar) as street_name,

        ----------  numerics (null = suppressed by the portal: 1-4)
        cast(population as bigint) as population,
        cast(households as bigint) as households,
        cast(residents_60_plus as bigint) as residents_60_plus,
        cast(share_60_plus as double) as share_60_plus,
        cast(children_0_14 as bigint) as children_0_14,
        cast(share_0_14 as double) as share_0_14,

        ----------  booleans
        cast(suppressed as boolean) as is_suppressed,

        ----------  dates
        cast(reference_date as date) as reference_date,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
