-- Hosted sites, their deployments, and what the gateway and the uptime prober see.
--
-- A site is a hosting service on-chain (ServiceRegistry: owner, state, expiry); this is its
-- off-chain side: the name it is served under and which deployment it serves.
create table sites (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    -- the DNS label it is served under: `<name>.<platform domain>`
    name text not null check (name ~ '^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$'),
    kind text not null check (kind in ('static', 'dynamic')),
    -- the hosting service (ServiceRegistry), null until it is opened on-chain
    service_id bigint,
    -- unknown paths answer index.html (single-page applications) instead of 404
    spa_fallback boolean not null default true,
    -- the folder of the build output inside the source, when not detected
    output_dir text,
    current_deployment_id bigint,
    created_at timestamptz not null default now(),
    unique (chain_id, name)
);
create index sites_by_account on sites (chain_id, account, id);
create unique index sites_by_service on sites (chain_id, service_id) where service_id is not null;

-- Every deployment of a site, kept as its history (rollback serves an earlier one again).
--   queued → fetching → uploading → live, or failed from any of them.
create table deployments (
    id bigserial primary key,
    site_id bigint not null references sites (id),
    source text not null check (source in ('upload', 'github')),
    -- upload: the archive as sent, pinned on IPFS until the deployment ends
    archive_cid text,
    -- github: the repository, the branch or ref asked for, and the commit deployed
    repository text,
    git_ref text,
    commit_sha text,
    state text not null default 'queued'
        check (state in ('queued', 'fetching', 'uploading', 'live', 'failed')),
    -- the site's directory on IPFS (CIDv1), once uploaded
    content_id text,
    files integer,
    size_bytes bigint,
    -- what the deploy did, line by line, for its owner
    log text not null default '',
    error text,
    -- a worker holds the job until this time; past it another worker takes the job over
    lease_until timestamptz,
    attempts integer not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz
);
create index deployments_by_site on deployments (site_id, id desc);
create index deployments_pending on deployments (id) where state in ('queued', 'fetching', 'uploading');

alter table sites add constraint sites_current_deployment
    foreign key (current_deployment_id) references deployments (id);

-- The files of a deployment, as the gateway resolves paths against them.
create table deployment_files (
    deployment_id bigint not null references deployments (id),
    -- relative to the site's root, without a leading slash (`index.html`, `css/app.css`)
    path text not null,
    cid text not null,
    size_bytes bigint not null,
    content_type text not null,
    primary key (deployment_id, path)
);

-- One row per request the gateway served, for site analytics.
create table site_requests (
    site_id bigint not null,
    at timestamptz not null,
    status smallint not null,
    bytes bigint not null,
    latency_us integer not null,
    -- a daily-salted hash of the visitor's address and user agent: counts visitors, names none
    visitor bigint not null
);
create index site_requests_by_site on site_requests (site_id, at);

-- The uptime prober's checks of each live site through the gateway.
create table uptime_checks (
    site_id bigint not null,
    at timestamptz not null default now(),
    up boolean not null,
    status smallint,
    latency_ms integer,
    error text
);
create index uptime_checks_by_site on uptime_checks (site_id, at);
