-- A queued deployment wakes the deploy workers of every replica at once, instead of at their
-- next poll.
create function notify_deployment_queued() returns trigger language plpgsql as $$
begin
  perform pg_notify('decentraspace_deployment_queued', new.id::text);
  return null;
end $$;

create trigger deployment_queued
  after insert on deployments
  for each row
  execute function notify_deployment_queued();
