-- One durable outbox for every transaction the platform signs (ADR 0011). A row is written in the
-- transaction of the business state that wants it; one sender per signing key drains the rows.

-- The one nonce counter per signing key, advanced in the transaction that signs with it.
create table signer_nonces (
  chain_id bigint not null,
  signer bytea not null check (length(signer) = 20),
  next_nonce bigint not null check (next_nonce >= 0),
  synced_at timestamptz not null default now(),
  primary key (chain_id, signer)
);

create table chain_outbox (
  id bigint generated always as identity primary key,
  chain_id bigint not null,
  signer bytea not null check (length(signer) = 20),
  -- What wants it: relay, meter_batch, billing, operator, payment, registrar, verifier.
  purpose text not null,
  -- The caller's key for the write: a retried request finds its row instead of adding one.
  reference text not null,
  -- The account the write is for (its owner may read the row's status), when there is one.
  account bytea check (length(account) = 20),
  to_address bytea not null check (length(to_address) = 20),
  input bytea not null,
  value numeric(78, 0) not null default 0 check (value >= 0),
  gas_limit bigint not null check (gas_limit > 0),
  -- queued → signed → pending → mined → confirmed, or reverted; see ADR 0011.
  state text not null default 'queued'
    check (state in ('queued', 'signed', 'pending', 'mined', 'confirmed', 'reverted')),
  nonce bigint check (nonce >= 0),
  -- The send that was mined, and where.
  tx_hash bytea check (length(tx_hash) = 32),
  block_number bigint,
  block_hash bytea check (length(block_hash) = 32),
  gas_used bigint,
  -- Failed broadcasts of the current send, the last one's reason, and when to try again.
  attempts integer not null default 0,
  error text,
  retry_at timestamptz,
  -- Times a row went back to queued because its nonce was taken outside the platform.
  requeued integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (chain_id, purpose, reference),
  -- A nonce is held by at most one row of a key.
  unique (chain_id, signer, nonce),
  check ((state = 'queued') = (nonce is null)),
  check (state not in ('mined', 'confirmed', 'reverted') or (tx_hash is not null and block_number is not null))
);

create index chain_outbox_open on chain_outbox (chain_id, signer, state, id)
  where state in ('queued', 'signed', 'pending', 'mined');

-- Every signed transaction of a row: a fee bump adds one at the same nonce, stored before it is
-- broadcast, so nothing is on the network without a row that knows it.
create table chain_outbox_sends (
  id bigint generated always as identity primary key,
  outbox_id bigint not null references chain_outbox (id) on delete cascade,
  raw bytea not null,
  tx_hash bytea not null unique check (length(tx_hash) = 32),
  max_fee_per_gas numeric(78, 0) not null,
  max_priority_fee_per_gas numeric(78, 0) not null,
  signed_at timestamptz not null default now(),
  broadcast_at timestamptz
);

create index chain_outbox_sends_row on chain_outbox_sends (outbox_id, id);

-- A queued row wakes its key's sender on every replica (the payload is the signer, hex); a row
-- that moves wakes whoever waits for it (the payload is its id).
create function notify_chain_outbox() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' or new.state = 'queued' then
    perform pg_notify('decentraspace_outbox_queued', encode(new.signer, 'hex'));
  end if;
  if tg_op = 'UPDATE' and new.state is distinct from old.state then
    perform pg_notify('decentraspace_outbox_moved', new.id::text);
  end if;
  return null;
end $$;

create trigger chain_outbox_notify
  after insert or update on chain_outbox
  for each row
  execute function notify_chain_outbox();

-- A first login's registration is an outbox row written with the request.
alter table account_registrations
  drop column tx_hash,
  drop column error,
  add column outbox_id bigint references chain_outbox (id);
