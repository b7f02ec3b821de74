-- The gateways keep hosts, sites and deployments in memory: a change to what routes a site
-- tells them (on commit) to read again. One notification per statement, named by its table.
create function notify_site_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('decentraspace_site_changed', tg_table_name);
    return null;
end;
$$;

create trigger sites_changed after insert or update or delete on sites
    for each statement execute function notify_site_changed();
create trigger site_previews_changed after insert or update or delete on site_previews
    for each statement execute function notify_site_changed();
create trigger site_instances_changed after insert or update or delete on site_instances
    for each statement execute function notify_site_changed();
