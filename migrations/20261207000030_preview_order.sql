-- Deliveries for one preview can arrive out of order. Each preview keeps the time of the event
-- that last moved it (a pull request's `updated_at`; for a branch, when its push was handled),
-- and only a newer event moves it again; a closed preview stays as a row (closed_at), so a late
-- event from before its closing cannot open it again.
alter table site_previews
  add column event_at timestamptz not null default now(),
  add column closed_at timestamptz;
