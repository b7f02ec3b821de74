-- Each folder's IPFS directory: its files (IPFS ones) and folders by name. A change inside a
-- folder bumps `cid_version` on it and every folder above it; the rebuild job builds the deepest
-- stale folders first and records the version it built, so a change made during a build leaves
-- the folder stale for the next pass.
alter table storage_folders
    add column cid text,
    add column cid_version bigint not null default 1,
    add column cid_built bigint not null default 0;
create index storage_folders_stale on storage_folders (id)
    where cid_version > cid_built and deleted_at is null;
create index storage_folders_released on storage_folders (id)
    where deleted_at is not null and cid is not null;
