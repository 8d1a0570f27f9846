with

source as (

    select * from {{ source('safety', 'incidents') }}

),

renamed as (

    select
        ----------  ids
        cast(incident_id as varchar) as incident_id,
        cast(row_id as varchar) as socrata_row_id,
        cast(row_version as varchar) as socrata_row_version,
        cast(reporter_id_number as varchar) as reporter_token,
        cast(reporter_id_number_is_minor as boolean) as reporter_is_minor,
        cast(street_code as varchar) as street_code,
        cast(community_code as varchar) as community_code,
        cast(grid_code as varchar) as grid_code,

        ----------  strings
        cast(incident_type as varchar) as incident_type,
        cast(incident_type_name as varchar) as incident_type_name,
        cast(category as varchar) as incident_category,
        cast(status as varchar) as status,
        cast(channel as varchar) as channel,
        cast(disposition as varchar) as disposition,
        cast(summary as varchar) as incident_summary,
        cast(police_station as varchar) as police_station,
        cast(road as varchar) as road,
        cast(location_type as varchar) as location_type,

        ----------  numerics
        cast(priority as integer) as priority,
        cast(location_cell_lat as double) as cell_latitude,
        cast(location_cell_long as double) as cell_longitude,

        ----------  booleans
        cast(at_residence as boolean) as is_at_residence,
        cast(status = 'closed' as boolean) as is_closed,

        ----------  timestamps (UTC)
        cast(reported_at as timestamptz) as reported_at,
        cast(dispatched_at as timestamptz) as dispatched_at,
        cast(closed_at as timestamptz) as closed_at,
        cast(created_at as timestamptz) as published_at,
        cast(updated_at as timestamptz) as updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
