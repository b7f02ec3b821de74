-- Builds from source: a site's build settings, and the `building` step of a deployment
--   queued → fetching → building → uploading → live (building only when the source needs it).
alter table sites
    -- the folder of the source the build runs in (monorepos), when not the top
    add column root_dir text,
    -- the commands the build runs, when not detected from the repository
    add column install_command text,
    add column build_command text;
alter table deployments drop constraint deployments_state_check;
alter table deployments add constraint deployments_state_check
    check (state in ('queued', 'fetching', 'building', 'uploading', 'starting', 'live', 'failed'));
drop index deployments_pending;
create index deployments_pending on deployments (id)
    where state in ('queued', 'fetching', 'building', 'uploading', 'starting');
-- A deployment queued by a push delivery deploys exactly the pushed commit, and becomes current
-- only when that commit is not older than the live one (GitHub's compare says "behind").
alter table deployments add column pushed boolean not null default false;
