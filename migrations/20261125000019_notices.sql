-- Notices an account can list (and hears as SSE events when connected): domain expiry reminders,
-- missing domain proofs, unlinked domains. `dedupe` names what a notice is about, so a job that
-- runs again does not repeat it.
create table notices (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    kind text not null,
    dedupe text not null,
    data jsonb not null,
    created_at timestamptz not null default now(),
    unique (chain_id, account, kind, dedupe)
);
create index notices_by_account on notices (chain_id, account, id desc);
