-- Dynamic sites (Paid): a container image the runtime (Fly Machines) runs per site, behind the
-- gateway. A deployment from an image goes queued → starting → live (or failed): the deploy job
-- launches a machine for it, waits for it to start, then makes it the site's instance and
-- destroys the one it replaces.
alter table deployments drop constraint deployments_source_check;
alter table deployments add constraint deployments_source_check
    check (source in ('upload', 'github', 'image'));
alter table deployments drop constraint deployments_state_check;
alter table deployments add constraint deployments_state_check
    check (state in ('queued', 'fetching', 'uploading', 'starting', 'live', 'failed'));
alter table deployments
    -- image: the container image and the port it serves HTTP on
    add column image text,
    add column port integer check (port between 1 and 65535),
    -- image: the machine launched for it (recorded before waiting, so a retry finds it)
    add column machine_id text;
drop index deployments_pending;
create index deployments_pending on deployments (id)
    where state in ('queued', 'fetching', 'uploading', 'starting');

-- The machine serving each dynamic site, and its state in the runtime state machine:
--   starting → running → stopping → stopped → starting …, running/starting → crashed,
--   any → destroyed.
create table site_instances (
    site_id bigint primary key references sites (id),
    deployment_id bigint not null references deployments (id),
    machine_id text not null,
    state text not null
        check (state in ('starting', 'running', 'stopping', 'stopped', 'crashed', 'destroyed')),
    -- host:port the gateway proxies to
    address text not null,
    updated_at timestamptz not null default now()
);

-- Every state change of a site's instance, for its owner and for operators.
create table site_instance_events (
    id bigserial primary key,
    site_id bigint not null references sites (id),
    machine_id text not null,
    from_state text,
    to_state text not null,
    reason text not null,
    at timestamptz not null default now()
);
create index site_instance_events_by_site on site_instance_events (site_id, id desc);
