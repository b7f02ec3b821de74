-- Files stored for accounts. The bytes live on IPFS (pinned) or Arweave; this is the record of what
-- belongs to whom, written once the content is stored (a crash before that leaves no record, and
-- only unpinned blocks on the node).
create table storage_files (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    -- the account's storage service (ServiceRegistry), created on its first upload
    service_id bigint not null,
    name text not null,
    content_type text not null,
    size_bytes bigint not null check (size_bytes >= 0),
    backend text not null check (backend in ('ipfs', 'arweave')),
    -- the CID (IPFS) or the transaction id (Arweave)
    content_id text not null,
    -- the secret of the file's shareable link (`/storage/shared/<token>`)
    access_token text not null unique,
    created_at timestamptz not null default now(),
    deleted_at timestamptz
);
create index storage_files_by_account on storage_files (chain_id, account, id desc)
    where deleted_at is null;
