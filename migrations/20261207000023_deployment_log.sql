-- Deployment logs stream while they are written: each line carries its time (as text, in the
-- log itself), a log over its bound drops whole lines from its start and counts the characters
-- it dropped (so a reader's position in the log survives the drop), and every change of a
-- deployment's log or state wakes the API replicas' log streams.
alter table deployments add column log_dropped bigint not null default 0;

-- The last `max` characters of a log, from the start of a line (a single line longer than
-- `max` is cut).
create function log_tail(log text, max int) returns text language sql immutable as $$
  select case when length(log) <= max then log
              else substr(right(log, max), strpos(right(log, max), chr(10)) + 1) end
$$;

create function notify_deployment_log() returns trigger language plpgsql as $$
begin
  perform pg_notify('decentraspace_deployment_log', new.id::text);
  return null;
end $$;

create trigger deployment_log_changed
  after update of log, state on deployments
  for each row
  when (old.log is distinct from new.log or old.state is distinct from new.state)
  execute function notify_deployment_log();
