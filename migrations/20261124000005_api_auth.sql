-- The API's sign-in state. Nonces are single-use and expire; refresh tokens are stored as SHA-256
-- hashes only, grouped in families (one per login) so that reusing a rotated token revokes them all.

create table auth_nonces (
    nonce text primary key,
    issued_at timestamptz not null default now(),
    expires_at timestamptz not null,
    -- set when a login consumed it; a nonce is never accepted twice
    used_at timestamptz
);
create index auth_nonces_expiry on auth_nonces (expires_at);

create table refresh_tokens (
    token_hash bytea primary key,
    family_id bytea not null,
    account bytea not null,
    issued_at timestamptz not null default now(),
    expires_at timestamptz not null,
    -- set when rotated: a second use is a reuse
    used_at timestamptz,
    revoked_at timestamptz
);
create index refresh_tokens_by_family on refresh_tokens (family_id);
create index refresh_tokens_by_account on refresh_tokens (account);

-- On-chain registrations the API asked for at a wallet's first login (one per account, so
-- concurrent first logins send one transaction).
create table account_registrations (
    chain_id bigint not null,
    account bytea not null,
    requested_at timestamptz not null default now(),
    tx_hash bytea,
    error text,
    primary key (chain_id, account)
);
