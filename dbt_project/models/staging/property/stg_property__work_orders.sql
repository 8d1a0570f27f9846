with

source as (

    select * from {{ source('property', 'work_orders') }}

),

renamed as (

    select
        ----------  ids
        cast(work_order_id as varchar) as work_order_id,
        cast(company_uscc as varchar) as company_uscc,
        cast(building_id as varchar) as building_id,
        cast(room_id as varchar) as room_id,
        cast(grid_id as varchar) as grid_code,
        cast(community_id as varchar) as community_code,
        cast(reporter_phone as varchar) as reporter_phone_token,

        ----------  strings
        cast(category as varchar) as category,
        cast(description as varchar) as description,
        cast(channel as varchar) as channel,
        cast(status as varchar) as status,

        ----------  booleans
        cast(status in ('done', 'cancelled') as boolean) as is_closed,

        ----------  timestamps (UTC)
        cast(created_at as timestamptz) as created_at,
        cast(assigned_at as timestamptz) as assigned_at,
        cast(closed_at as timestamptz) as closed_at,
        cast(updated_at as timestamptz) as updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
