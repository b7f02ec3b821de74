-- Managed PostgreSQL databases (ADR 0014): one per Database service, made on a database host by
-- the provisioner from the indexed services. Names derive from the service id; the role's
-- password and the backups' key are sealed at rest.
create table managed_databases (
    chain_id bigint not null,
    service_id bigint not null,
    owner bytea not null,
    -- the host it lives on (`host:port` of an entry of DATABASE_HOSTS)
    host text not null,
    -- its database and its login role: `ds_<service id>`
    name text not null,
    password_sealed bytea not null,
    -- false from a rotation until the host has the new password
    password_applied boolean not null default false,
    backup_key_sealed bytea not null,
    -- what the host has: `new` (nothing yet), `open` (connections allowed), `closed` (refused:
    -- paused, suspended, or far past its quota), `dropped`
    applied text not null default 'new' check (applied in ('new', 'open', 'closed', 'dropped')),
    -- past its quota: transactions are read-only by default
    read_only boolean not null default false,
    size_bytes bigint not null default 0,
    size_measured_at timestamptz,
    created_at timestamptz not null default now(),
    ready_at timestamptz,
    -- when the provisioner first saw the service cancelled; dropped a grace period later, after
    -- its final backup
    cancelled_at timestamptz,
    dropped_at timestamptz,
    primary key (chain_id, service_id),
    unique (host, name)
);
create index managed_databases_by_owner on managed_databases (chain_id, owner, service_id);
create index managed_databases_live on managed_databases (chain_id, host) where dropped_at is null;

-- Backups: `pg_dump --format=custom`, encrypted with the database's key, on IPFS (pinned).
-- Requested rows (`pending`) are taken by the backup worker; a final backup is requested when the
-- service is cancelled and the database is dropped only once it is `done`.
create table database_backups (
    id bigserial primary key,
    chain_id bigint not null,
    service_id bigint not null,
    reason text not null check (reason in ('manual', 'daily', 'final')),
    state text not null default 'pending' check (state in ('pending', 'done', 'failed')),
    cid text,
    size_bytes bigint,
    error text,
    requested_at timestamptz not null default now(),
    finished_at timestamptz,
    foreign key (chain_id, service_id) references managed_databases (chain_id, service_id)
);
create index database_backups_by_database on database_backups (chain_id, service_id, id desc);
create index database_backups_pending on database_backups (id) where state = 'pending';
-- one final backup per database
create unique index database_backups_one_final on database_backups (chain_id, service_id)
  where reason = 'final';

-- Restores of a backup into a database of the same owner (the one it came from, or another).
create table database_restores (
    id bigserial primary key,
    backup_id bigint not null references database_backups (id),
    chain_id bigint not null,
    -- the database restored into
    service_id bigint not null,
    state text not null default 'pending' check (state in ('pending', 'done', 'failed')),
    error text,
    requested_at timestamptz not null default now(),
    finished_at timestamptz,
    foreign key (chain_id, service_id) references managed_databases (chain_id, service_id)
);
create index database_restores_by_database on database_restores (chain_id, service_id, id desc);
create index database_restores_pending on database_restores (id) where state = 'pending';
