-- Per-minute request budgets shared by every API replica: a replica leases blocks of a key's
-- budget for the minute and spends them locally, so together they never admit more than the
-- budget. Unlogged: a budget lost in a crash only forgives one minute.
create unlogged table rate_budgets (
  key text not null,
  -- Unix time / 60.
  window_start bigint not null,
  used integer not null check (used >= 0),
  primary key (key, window_start)
);

-- Leases up to `want` more requests of `key`'s minute `window`, never past `budget`; how many
-- were granted (0 once the budget is spent).
create function lease_rate_budget(key text, window_start bigint, want integer, budget integer)
returns integer language plpgsql as $$
declare
  current integer;
  granted integer;
begin
  insert into rate_budgets as r (key, window_start, used)
  values (lease_rate_budget.key, lease_rate_budget.window_start, 0)
  on conflict do nothing;
  select r.used into current from rate_budgets r
  where r.key = lease_rate_budget.key and r.window_start = lease_rate_budget.window_start
  for update;
  granted := greatest(0, least(want, budget - current));
  if granted > 0 then
    update rate_budgets r set used = r.used + granted
    where r.key = lease_rate_budget.key and r.window_start = lease_rate_budget.window_start;
  end if;
  return granted;
end $$;
