-- One row per grid (网格): what every department's system says about it, side by side — the
-- register's people and homes, the health centre's patients, the schools' students, residents'
-- requests, police incidents, public facilities, social services and businesses.
with

grids as (

    select * from {{ ref('stg_registry__grids') }}
    where not is_deleted

),

people as (

    select
        grid_code,
        count(*) as residents,
        count(distinct household_id) as households,
        count(distinct building_id) as buildings,
        count(*) filter (where age_band = '0-14') as children_0_14,
        count(*) filter (where age_band = '60+') as residents_60_plus,
        count(*) filter (where is_health_patient) as health_patients,
        count(*) filter (where is_enrolled_student) as enrolled_students
    from {{ ref('dim_residents') }}
    group by grid_code

),

requests as (

    select
        grid_code,
        count(*) as service_requests,
        count(*) filter (where status = 'open') as service_requests_open
    from {{ ref('stg_open311__service_requests') }}
    group by grid_code

),

incidents as (

    select
        grid_code,
        count(*) as incidents,
        count(*) filter (where not is_closed) as incidents_open
    from {{ ref('stg_safety__incidents') }}
    group by grid_code

),

facilities as (

    select
        grid_code,
        count(*) as public_facilities
    from {{ ref('stg_opendata__facilities') }}
    group by grid_code

),

service_points as (

    select
        grid_code,
        count(distinct location_id) as social_service_locations
    from {{ ref('stg_directory__locations') }}
    group by grid_code

),

businesses as (

    select
        grid_code,
        count(*) as merchants
    from {{ ref('stg_property__merchants') }}
    where not is_deleted and organisation_kind = 'merchant'
    group by grid_code

),

work_orders as (

    select
        grid_code,
        count(*) filter (where not is_closed) as work_orders_open
    from {{ ref('stg_property__work_orders') }}
    group by grid_code

),

final as (

    select
        grids.grid_code,
        grids.grid_name,
        grids.community_code,
        grids.community_name,
        grids.street_code,
        grids.street_name,
        coalesce(people.residents, 0) as residents,
        coalesce(people.households, 0) as households,
        coalesce(people.buildings, 0) as buildings,
        coalesce(people.children_0_14, 0) as children_0_14,
        coalesce(people.residents_60_plus, 0) as residents_60_plus,
        coalesce(people.health_patients, 0) as health_patients,
        coalesce(people.enrolled_students, 0) as enrolled_students,
        coalesce(requests.service_requests, 0) as service_requests,
        coalesce(requests.service_requests_open, 0) as service_requests_open,
        coalesce(incidents.incidents, 0) as incidents,
        coalesce(incidents.incidents_open, 0) as incidents_open,
        coalesce(facilities.public_facilities, 0) as public_facilities,
        coalesce(service_points.social_service_locations, 0) as social_service_locations,
        coalesce(businesses.merchants, 0) as merchants,
        coalesce(work_orders.work_orders_open, 0) as work_orders_open

    from grids
    left join people on grids.grid_code = people.grid_code
    left join requests on grids.grid_code = requests.grid_code
    left join incidents on grids.grid_code = incidents.grid_code
    left join facilities on grids.grid_code = facilities.grid_code
    left join service_points on grids.grid_code = service_points.grid_code
    left join businesses on grids.grid_code = businesses.grid_code
    left join work_orders on grids.grid_code = work_orders.grid_code

)

select * from final
