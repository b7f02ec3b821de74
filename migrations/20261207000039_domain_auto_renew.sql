-- Names bought through the platform renew themselves before they end unless their owner turned
-- it off here (no row, or a row of an earlier owner: on).
create table domain_auto_renew (
    chain_id bigint not null,
    name text not null,
    owner bytea not null,
    enabled boolean not null,
    updated_at timestamptz not null default now(),
    primary key (chain_id, name)
);
