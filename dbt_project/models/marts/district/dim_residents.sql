-- One row per resident on the population register (not moved out or deceased), with what the
-- other departments' systems know about the same person — joined on the keyed pseudonym of the
-- resident ID number, which every source produces identically. Pseudonymous: no identifier, no
-- birth date (an age band instead).
with

residents as (

    select * from {{ ref('stg_registry__residents') }}
    where not is_deleted

),

patients as (

    select distinct resident_token
    from {{ ref('stg_health__patients') }}
    where resident_token is not null

),

students as (

    select distinct student_token
    from {{ ref('stg_schools__students') }}
    where student_token is not null and not is_deleted

),

requests as (

    select
        requester_token,
        count(*) as service_requests_filed
    from {{ ref('stg_open311__service_requests') }}
    where requester_token is not null
    group by requester_token

),

incidents as (

    select
        reporter_token,
        count(*) as incidents_reported
    from {{ ref('stg_safety__incidents') }}
    where reporter_token is not null
    group by reporter_token

),

final as (

    select
        residents.resident_id,
        residents.person_token,
        residents.household_id,
        residents.building_id,
        residents.grid_code,
        residents.community_code,
        residents.sex,
        residents.relation_to_head,
        residents.is_minor,
        residents.registered_at,
        case
            when residents.birth_date is null then null
            when date_diff('year', residents.birth_date, current_date) < 15 then '0-14'
            when date_diff('year', residents.birth_date, current_date) < 60 then '15-59'
            else '60+'
        end as age_band,
        patients.resident_token is not null as is_health_patient,
        students.student_token is not null as is_enrolled_student,
        coalesce(requests.service_requests_filed, 0) as service_requests_filed,
        coalesce(incidents.incidents_reported, 0) as incidents_reported

    from residents
    left join patients on residents.person_token = patients.resident_token
    left join students on residents.person_token = students.student_token
    left join requests on residents.person_token = requests.requester_token
    left join incidents on residents.person_token = incidents.reporter_token

)

select * from final
