-- One row per organisation (by Unified Social Credit Code) that answers for something in the
-- district: property companies and merchants (property system), social organisations and public
-- institutions (service directory), and their latest public credit rating (open-data portal).
with

merchants as (

    select * from {{ ref('stg_property__merchants') }}
    where not is_deleted

),

organisations as (

    select * from {{ ref('stg_directory__organizations') }}
    where uscc is not null

),

services as (

    select
        organization_id,
        count(*) as directory_services,
        count(*) filter (where is_active) as directory_services_active
    from {{ ref('stg_directory__services') }}
    group by organization_id

),

ratings as (

    select
        uscc,
        enterprise_name,
        enterprise_kind,
        industry,
        rating,
        rated_on
    from {{ ref('stg_opendata__credit_ratings') }}
    qualify row_number() over (partition by uscc order by rated_on desc, rating_id desc) = 1

),

work_orders as (

    select
        company_uscc as uscc,
        count(*) as work_orders,
        count(*) filter (where not is_closed) as work_orders_open
    from {{ ref('stg_property__work_orders') }}
    group by company_uscc

),

parties as (

    select uscc from merchants
    union
    select uscc from organisations
    union
    select uscc from ratings

),

final as (

    select
        parties.uscc,
        merchants.grid_code,
        merchants.community_code,
        merchants.licence_status,
        ratings.rating as latest_credit_rating,
        ratings.rated_on as latest_rated_on,
        coalesce(merchants.merchant_name, organisations.organization_name, ratings.enterprise_name)
            as party_name,
        coalesce(merchants.organisation_kind, ratings.enterprise_kind) as party_kind,
        coalesce(merchants.industry, ratings.industry) as industry,
        coalesce(services.directory_services, 0) as directory_services,
        coalesce(services.directory_services_active, 0) as directory_services_active,
        coalesce(work_orders.work_orders, 0) as work_orders,
        coalesce(work_orders.work_orders_open, 0) as work_orders_open,
        merchants.uscc is not null as in_property_system,
        organisations.uscc is not null as in_service_directory,
        ratings.uscc is not null as in_credit_register

    from parties
    left join merchants on parties.uscc = merchants.uscc
    left join organisations on parties.uscc = organisations.uscc
    left join services on organisations.organization_id = services.organization_id
    left join ratings on parties.uscc = ratings.uscc
    left join work_orders on parties.uscc = work_orders.uscc

)

select * from final
