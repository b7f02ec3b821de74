-- Folders of Paid accounts. A folder's name is unique among its live siblings; deleting marks the
-- folder and what it holds (files are unpinned).
create table storage_folders (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    parent_id bigint references storage_folders (id),
    name text not null,
    -- the secret of the folder's shareable link (`/storage/shared/<token>`)
    access_token text not null unique,
    created_at timestamptz not null default now(),
    deleted_at timestamptz
);
create unique index storage_folders_unique_name
    on storage_folders (chain_id, account, coalesce(parent_id, 0), name)
    where deleted_at is null;
create index storage_folders_by_parent on storage_folders (parent_id) where deleted_at is null;

alter table storage_files add column folder_id bigint references storage_folders (id);
create index storage_files_by_folder on storage_files (folder_id, id) where deleted_at is null;
