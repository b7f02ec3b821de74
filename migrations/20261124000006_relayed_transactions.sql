-- Every transaction the API relayed for a user: a raw transaction the user's wallet signed, or a
-- forward request the platform's relayer submitted through the forwarder (paying the gas).
create table relayed_transactions (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    -- raw | forward
    mode text not null,
    -- the platform contract called and the function's selector
    target bytea not null,
    selector bytea not null,
    function text not null,
    -- received (not sent yet) | pending | mined | failed (reverted or never sent) | replaced
    status text not null,
    tx_hash bytea,
    -- the sender's nonce: the user's (raw) or the relayer's (forward)
    nonce bigint,
    -- what was sent (forward: the forwarder calldata and gas limit), to send it again with a
    -- higher fee when it is stuck
    calldata bytea,
    gas_limit bigint,
    -- hashes this transaction had before a fee bump replaced them
    replaced_tx_hashes bytea[] not null default '{}',
    bumps integer not null default 0,
    block_number bigint,
    error text,
    idempotency_key text,
    -- keccak256 of what was asked to be relayed (the raw transaction, or the signed forward
    -- request): the same signed request is relayed once, and a key reused for another request
    -- is refused
    request_hash bytea not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (account, idempotency_key)
);
create unique index relayed_transactions_once on relayed_transactions (chain_id, request_hash)
    where status not in ('failed', 'replaced');
create index relayed_transactions_by_account on relayed_transactions (account, id desc);
create index relayed_transactions_open on relayed_transactions (id) where status in ('received', 'pending');
