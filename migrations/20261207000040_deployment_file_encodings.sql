-- Compressed copies of a deployment's files, made once at deploy (brotli `br`, `gzip`): the
-- gateway answers with one when the client accepts it.
create table deployment_file_encodings (
    deployment_id bigint not null references deployments (id),
    path text not null,
    encoding text not null check (encoding in ('br', 'gzip')),
    cid text not null,
    size_bytes bigint not null,
    primary key (deployment_id, path, encoding)
);
