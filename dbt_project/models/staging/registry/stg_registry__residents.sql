with

source as (

    select * from {{ source('registry', 'residents') }}

),

renamed as (

    select
        ----------  ids
        cast(resident_id as varchar) as resident_id,
        cast(resident_id_number as varchar) as person_token,
        cast(resident_id_number_is_minor as boolean) as is_minor,
        cast(resident_mobile as varchar) as mobile_token,
        cast(household_id as varchar) as household_id,
        cast(room_id as varchar) as room_id,
        cast(building_id as varchar) as building_id,
        cast(grid_id as varchar) as grid_code,
        cast(community_id as varchar) as community_code,

        ----------  strings
        cast(sex as varchar) as sex,
        cast(relation as varchar) as relation_to_head,
        cast(status as varchar) as registry_status,

        ----------  dates
        cast(birth_date as date) as birth_date,

        ----------  booleans
        cast(deleted_at is not null as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(registered_at as timestamptz) as registered_at,
        cast(updated_at as timestamptz) as updated_at,
        cast(deleted_at as timestamptz) as deleted_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
