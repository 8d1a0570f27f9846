with

source as (

    select * from {{ source('health', 'patients') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as patient_id,
        cast(resident_id_number as varchar) as resident_token,
        cast(resident_id_number_is_minor as boolean) as patient_is_minor,
        cast(phone as varchar) as phone_token,
        cast(building_id as varchar) as building_id,
        cast(grid_code as varchar) as grid_code,
        cast(general_practitioner as varchar) as general_practitioner_id,

        ----------  strings
        cast(gender as varchar) as gender,
        cast(address as varchar) as address,

        ----------  dates
        cast(birth_date as date) as birth_date,

        ----------  booleans
        cast(coalesce(active, true) as boolean) as is_active,
        cast(general_practitioner is not null as boolean) as has_family_doctor,

        ----------  timestamps (UTC)
        cast(last_updated as timestamptz) as last_updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
