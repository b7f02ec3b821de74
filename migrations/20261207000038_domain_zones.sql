-- The platform's records in the zones of names bought through the registrar: which site each
-- zone was last pointed at (null: none) and when it was last read, so a pass writes only what
-- changed and reads every zone again after the recheck interval to repair drift.
create table domain_zones (
    chain_id bigint not null,
    name text not null,
    target text,
    synced_at timestamptz not null,
    primary key (chain_id, name)
);
