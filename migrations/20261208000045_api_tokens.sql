-- API tokens for CI jobs and the CLI (`accounts/api_tokens.rs`): made by a signed-in wallet, with
-- scopes and an expiry, kept as the SHA-256 digest of the token only.
create table api_tokens (
  id bigserial primary key,
  chain_id bigint not null,
  account bytea not null check (length(account) = 20),
  name text not null,
  scopes text[] not null check (cardinality(scopes) > 0),
  token_hash bytea not null unique check (length(token_hash) = 32),
  -- the token's first characters, to tell it apart in a list
  prefix text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  last_used_at timestamptz,
  revoked_at timestamptz
);

create index api_tokens_by_account on api_tokens (chain_id, account, id);
