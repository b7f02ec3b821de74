-- The periodic re-check of linked external domains' proofs: when a proof was first found missing
-- (cleared when it is found again), and the last check. A domain whose proof stays missing past
-- the grace period is unlinked on-chain by the verifier.
create table domain_checks (
    chain_id bigint not null,
    node bytea not null,
    name text not null,
    failing_since timestamptz,
    last_checked_at timestamptz not null default now(),
    last_error text,
    primary key (chain_id, node)
);
