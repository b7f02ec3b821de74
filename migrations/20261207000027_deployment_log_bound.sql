-- Every write of a deployment's log is bounded in one place: past 256 KiB the oldest whole lines
-- go and `log_dropped` counts the characters dropped, whichever statement appended.
create function bound_deployment_log() returns trigger language plpgsql as $$
declare
  kept text;
begin
  if length(new.log) > 262144 then
    kept := log_tail(new.log, 262144);
    new.log_dropped := new.log_dropped + length(new.log) - length(kept);
    new.log := kept;
  end if;
  return new;
end $$;

create trigger deployment_log_bounded
  before insert or update of log on deployments
  for each row
  execute function bound_deployment_log();
