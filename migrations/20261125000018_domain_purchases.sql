-- Domain purchases and renewals through the registrar, one row each, moving
--   charging → registering → registered → recorded, or → failed (nothing charged) /
--   refunded (the registrar failed after the charge; the credits went back).
create table domain_purchases (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    name text not null,
    kind text not null check (kind in ('purchase', 'renewal')),
    years integer not null check (years between 1 and 10),
    credits numeric not null,
    price_subunits bigint not null,
    currency text not null,
    state text not null check (state in ('charging', 'registering', 'registered', 'recorded', 'failed', 'refunded')),
    error text,
    expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index domain_purchases_by_account on domain_purchases (chain_id, account, id desc);
-- One purchase of a name under way at a time.
create unique index domain_purchases_one_open on domain_purchases (chain_id, name)
    where state in ('charging', 'registering', 'registered');
