-- The indexer's mirror of the platform contracts. Raw events are the source; every projection
-- below is a fold of them and can be rebuilt with `indexer reindex`.

-- Where indexing stands, per chain: the last block whose events are all in `events`.
create table indexer_checkpoints (
    chain_id bigint primary key,
    block_number bigint not null,
    block_hash bytea not null,
    updated_at timestamptz not null default now()
);

-- Hashes of indexed blocks that are not final yet, to detect reorgs by parent hash.
create table indexer_blocks (
    chain_id bigint not null,
    block_number bigint not null,
    block_hash bytea not null,
    parent_hash bytea not null,
    primary key (chain_id, block_number)
);

-- Every log of every platform contract, decoded where the bindings know it, raw always.
create table events (
    chain_id bigint not null,
    block_number bigint not null,
    log_index integer not null,
    block_hash bytea not null,
    block_time timestamptz,
    tx_hash bytea not null,
    tx_index integer not null,
    address bytea not null,
    contract text not null,
    -- null when the bindings do not know the event (kept raw, never dropped)
    event_name text,
    args json,
    -- the account the event is about, for per-account reads (null when none)
    account bytea,
    -- the topics, 32 bytes each, concatenated
    topics bytea not null,
    data bytea not null,
    -- the projection entity the event changes (see projection::EntityKey), as the first 8 bytes of
    -- keccak256 of its text form; each platform event changes at most one, and re-folding an entity
    -- after a reorg reads its events by this (a collision only reads an extra event, which the fold
    -- filters out)
    entity_hash bigint,
    primary key (chain_id, block_number, log_index)
);
create index events_by_account on events (chain_id, account, block_number, log_index)
    where account is not null;
create index events_by_entity on events (chain_id, entity_hash) where entity_hash is not null;

-- Accounts: registration, tier and status (AccountRegistry).
create table accounts (
    chain_id bigint not null,
    address bytea not null,
    status text not null,
    tier text not null,
    tier_expires_at timestamptz,
    registered_at timestamptz not null,
    primary key (chain_id, address)
);

-- Credit balances (CreditLedger), in credit units (6 decimals).
create table credit_balances (
    chain_id bigint not null,
    account bytea not null,
    balance numeric(78, 0) not null,
    primary key (chain_id, account)
);

-- Every credit movement with its reference, one row per ledger event.
create table credit_entries (
    chain_id bigint not null,
    block_number bigint not null,
    log_index integer not null,
    account bytea not null,
    -- recharge | fiat | deduction | skipped
    kind text not null,
    service_id bigint,
    credits numeric(78, 0) not null,
    balance_after numeric(78, 0),
    token bytea,
    token_amount numeric(78, 0),
    reference bytea,
    block_time timestamptz,
    tx_hash bytea not null,
    -- one row per ledger event, deleted with it on a reorg
    primary key (chain_id, block_number, log_index)
);
create index credit_entries_by_account on credit_entries (chain_id, account, block_number desc, log_index desc);
create index credit_entries_by_service on credit_entries (chain_id, service_id, block_number desc)
    where service_id is not null;

-- Services (ServiceRegistry).
create table services (
    chain_id bigint not null,
    service_id bigint not null,
    owner bytea not null,
    kind text not null,
    state text not null,
    ref bytea not null,
    created_at timestamptz not null,
    -- applies while the owner is on the Free tier (see ServiceRegistry.isExpired)
    expires_at timestamptz,
    primary key (chain_id, service_id)
);
create index services_by_owner on services (chain_id, owner, service_id);

-- Every state change of every service, for history and metering.
create table service_state_changes (
    chain_id bigint not null,
    block_number bigint not null,
    log_index integer not null,
    service_id bigint not null,
    state text not null,
    actor bytea,
    block_time timestamptz,
    -- one row per service event, deleted with it on a reorg
    primary key (chain_id, block_number, log_index)
);
create index service_state_changes_by_service on service_state_changes (chain_id, service_id, block_number, log_index);

-- Domains (DomainRegistry); a released domain has no row.
create table domains (
    chain_id bigint not null,
    node bytea not null,
    name text not null,
    owner bytea not null,
    method text not null,
    expires_at timestamptz,
    service_id bigint,
    primary key (chain_id, node)
);
create index domains_by_owner on domains (chain_id, owner);
create index domains_by_name on domains (chain_id, name);

-- Role members of every platform contract (OpenZeppelin AccessControl).
create table role_members (
    chain_id bigint not null,
    contract bytea not null,
    role bytea not null,
    account bytea not null,
    primary key (chain_id, contract, role, account)
);

-- Accepted tokens and their rates (credit units per base unit, scaled by 1e18; 0 = not accepted).
create table token_rates (
    chain_id bigint not null,
    token bytea not null,
    rate numeric(78, 0) not null,
    primary key (chain_id, token)
);

-- Hourly prices (credit units) and limits (open services) by service kind and tier.
create table service_prices (
    chain_id bigint not null,
    kind text not null,
    tier text not null,
    credits_per_hour numeric(78, 0) not null,
    primary key (chain_id, kind, tier)
);
create table tier_limits (
    chain_id bigint not null,
    kind text not null,
    tier text not null,
    max_open integer not null,
    primary key (chain_id, kind, tier)
);

-- Single-valued contract settings (free-tier duration, paid-tier price, wiring, implementations).
create table contract_settings (
    chain_id bigint not null,
    contract bytea not null,
    name text not null,
    value text not null,
    primary key (chain_id, contract, name)
);
