with

source as (

    select * from {{ source('opendata', 'credit_ratings') }}

),

renamed as (

    select
        ----------  ids
        cast(rating_id as varchar) as rating_id,
        cast(datastore_id as bigint) as datastore_row_id,
        cast(uscc as varchar) as uscc,

        ----------  strings
        cast(enterprise_name as varchar) as enterprise_name,
        cast(enterprise_kind as varchar) as enterprise_kind,
        cast(industry as varchar) as industry,
        cast(rating as varchar) as rating,
        cast(previous_rating as varchar) as previous_rating,
        cast(rating_period as varchar) as rating_period,
        cast(authority as varchar) as rating_authority,

        ----------  dates
        cast(rated_on as date) as rated_on,
        cast(registered_on as date) as registered_on,

        ----------  timestamps (UTC)
        cast(published_at as timestamptz) as published_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
