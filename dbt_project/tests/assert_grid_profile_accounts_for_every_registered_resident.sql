-- Every resident on the register is counted in exactly one grid of the profile.
with

registered as (

    select count(*) as n
    from {{ ref('stg_registry__residents') }}
    where not is_deleted

),

profiled as (

    select sum(residents) as n
    from {{ ref('mart_grid_profile') }}

)

select
    registered.n as registered,
    profiled.n as profiled
from registered cross join profiled
where registered.n <> profiled.n
