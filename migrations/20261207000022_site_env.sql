-- Sites' build environment: variables and secrets, each for production builds or for previews,
-- sealed at rest (AES-256-GCM, the site, scope and name as associated data). The API shows names,
-- never values; builds get them in their environment and their logs mask them.
create table site_env (
    site_id bigint not null references sites (id),
    scope text not null check (scope in ('production', 'preview')),
    name text not null check (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    value_sealed bytea not null,
    updated_at timestamptz not null default now(),
    primary key (site_id, scope, name)
);
