-- The indexed head's block time: the chain's clock as far as the index goes. Metering and expiry
-- read time from here, so that they agree with the chain (whose clock is the contracts').
alter table indexer_checkpoints add column block_time timestamptz;

-- The billing meter's own state. The chain is the ledger; these tables only say what the meter
-- has planned and sent, so that a restart carries on where it stopped and a charge is never sent
-- under two usage references.

-- How far each service's active time has been charged.
create table meter_services (
    chain_id bigint not null,
    service_id bigint not null,
    -- active time before this instant is charged (or was expired or paused, and never will be)
    metered_until timestamptz not null,
    -- what rounding left uncharged, in credit units × GiB-seconds (less than one unit: 3600 × 2^30),
    -- carried into the next charge so that rounding never loses or adds a credit unit
    carry numeric(78, 0) not null default 0,
    primary key (chain_id, service_id)
);

-- Every charge: a span of a service's active time, or usage recorded through `/billing/deduct`.
-- The usage reference is the ledger's idempotency key: the chain charges a reference at most once.
create table meter_charges (
    id bigserial primary key,
    chain_id bigint not null,
    usage_ref bytea not null,
    account bytea not null,
    service_id bigint not null,
    -- credit units asked for
    credits numeric(78, 0) not null check (credits > 0),
    -- time | usage
    source text not null check (source in ('time', 'usage')),
    -- for time charges: the active span [period_start, period_end) it covers
    period_start timestamptz,
    period_end timestamptz,
    active_seconds bigint,
    -- for usage: who recorded it (`service` or an admin's address), their reference and note
    recorded_by text,
    reference text,
    description text,
    -- pending: to send | sending: handed to the node | sent: mined | charged | deferred: the ledger
    -- found the service not chargeable (paused, suspended, expired) when the batch ran, sent again
    -- once it is | skipped: the service was cancelled, never charged
    status text not null default 'pending'
        check (status in ('pending', 'sending', 'sent', 'charged', 'deferred', 'skipped')),
    -- the indexed block at planning: the charge's ledger event can only be in a later block
    planned_block bigint not null,
    attempts integer not null default 0,
    tx_hash bytea,
    -- the billing key's nonce the batch went out with, and how often its fee was raised
    nonce bigint,
    fee_bumps integer not null default 0,
    -- what the ledger took (less than `credits` when the balance ran out)
    charged_credits numeric(78, 0),
    charged_block bigint,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (chain_id, usage_ref)
);
create index meter_charges_open on meter_charges (chain_id, id)
    where status in ('pending', 'sending', 'sent', 'deferred');
create index meter_charges_by_service on meter_charges (chain_id, service_id, id desc);
-- Recently closed charges, checked against the index after a reorg.
create index meter_charges_closed on meter_charges (chain_id, charged_block)
    where status in ('charged', 'skipped', 'deferred');
-- One usage per caller reference and service (a retried `/billing/deduct` finds the first).
create unique index meter_charges_usage_reference on meter_charges (chain_id, service_id, reference)
    where source = 'usage';

-- The tier an account is priced and limited at, at `at`: Paid until its paid period ends, as
-- AccountRegistry.effectiveTier (an account with no row is Free).
create function effective_tier(tier text, tier_expires_at timestamptz, at timestamptz)
returns text
language sql immutable
as $$
    select case when tier = 'paid' and (tier_expires_at is null or tier_expires_at > at)
                then 'paid' else 'free' end
$$;

-- The chain's time as far as the index goes (the wall clock until the indexer has recorded one).
create function chain_now(chain bigint)
returns timestamptz
language sql stable
as $$
    select coalesce((select block_time from indexer_checkpoints where chain_id = chain), now())
$$;
