-- The gateway's request log, counted instead of kept request by request: per site, minute and
-- status, the requests, bytes and a histogram of times to answer (bucket 0 below 64 µs, bucket i
-- from 64·2^((i-1)/4) µs, 80 buckets: `hosting/traffic.rs`), and each day's distinct visitors.
-- A row per request could not keep up with the gateway (50,000 requests a second on two cores)
-- and was dropped past its buffer; counts keep every request at any rate.
create table site_traffic (
  site_id bigint not null,
  minute timestamptz not null,
  status smallint not null,
  requests bigint not null,
  bytes bigint not null,
  latency bigint[] not null check (cardinality(latency) = 80),
  primary key (site_id, minute, status)
);

create table site_visitors (
  site_id bigint not null,
  day date not null,
  -- a daily-salted hash of the visitor's address and user agent: counts visitors, names none
  visitor bigint not null,
  primary key (site_id, day, visitor)
);

-- What was recorded request by request, carried over.
create temporary table carried as
  select site_id, date_trunc('minute', at) as minute, status,
         case when latency_us < 64 then 0
              else least(79, floor(4 * log(2.0, latency_us / 64.0))::int + 1) end as bucket,
         count(*) as requests, coalesce(sum(bytes), 0)::bigint as bytes
  from site_requests
  group by 1, 2, 3, 4;

insert into site_traffic (site_id, minute, status, requests, bytes, latency)
select k.site_id, k.minute, k.status, k.requests, k.bytes,
       array(select coalesce(c.requests, 0)
             from generate_series(0, 79) as b(i)
             left join carried c on c.site_id = k.site_id and c.minute = k.minute
                                and c.status = k.status and c.bucket = b.i
             order by b.i)
from (select site_id, minute, status, sum(requests)::bigint as requests, sum(bytes)::bigint as bytes
      from carried group by 1, 2, 3) k;

insert into site_visitors (site_id, day, visitor)
select distinct site_id, (at at time zone 'utc')::date, visitor from site_requests;

drop table carried;
drop table site_requests;
