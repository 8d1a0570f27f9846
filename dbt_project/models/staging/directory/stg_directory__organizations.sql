with

source as (

    select * from {{ source('directory', 'organizations') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as organization_id,
        cast(uscc as varchar) as uscc,
        cast(parent_organization_id as varchar) as parent_organization_id,

        ----------  strings
        cast(name as varchar) as organization_name,
        cast(alternate_name as varchar) as alternate_name,
        cast(description as varchar) as organization_description,
        cast(legal_status as varchar) as legal_status,
        cast(email as varchar) as organization_email,
        cast(website as varchar) as website,
        cast(phone as varchar) as organization_phone,

        ----------  numerics
        cast(year_incorporated as integer) as year_incorporated,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at,

        ----------  booleans
        coalesce(cast(uscc as varchar) like '52%', false) as is_social_organisation,
        coalesce(cast(uscc as varchar) like '12%', false) as is_public_institution

    from source

)

select * from renamed
