-- Build minutes: what each deployment's build ran (rounded up to the minute), in the month it ran
-- (UTC), and how many of them went past the account's monthly allowance and were charged (as
-- usage of the site's hosting service, referenced by the deployment: charged at most once).
create table build_minutes (
  deployment_id bigint primary key references deployments (id),
  chain_id bigint not null,
  account bytea not null,
  month date not null,
  minutes integer not null check (minutes > 0),
  billed_minutes integer not null default 0 check (billed_minutes between 0 and minutes),
  created_at timestamptz not null default now()
);
create index build_minutes_by_account on build_minutes (chain_id, account, month);
