//! Storage end to end against a real IPFS node (js-ipfs speaking the Kubo RPC API), anvil,
//! Postgres, the indexer and the API: uploads stream to IPFS and read back byte for byte by CID,
//! through the node and its gateway; the account's storage service is opened on-chain on the first
//! upload; tier limits, bad requests and paused storage are refused with clear problems and leave
//! nothing recorded.

use decentraspace_tests::{Stack, TestApi, TestDb, eventually, problem_type};
use rand::RngCore;
use serde_json::{Value, json};

/// The stack, with the Free tier limited to 1 MiB files and 1.5 MiB in all.
/// The stack, with the Free tier limited to 1 MiB files and 1.5 MiB in all.
async fn stack() -> anyhow::Result<Stack> {
    Stack::builder()
        .ipfs()
        .configure(|config, _| {
            config.storage_max_file_free = 1024 * 1024;
            config.storage_quota_free = 1024 * 1024 + 512 * 1024;
        })
        .start()
        .await
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

async fn upload(
    api: &TestApi,
    token: Option<&str>,
    name: &str,
    content_type: &str,
    bytes: Vec<u8>,
    backend: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut form = reqwest::multipart::Form::new();
    if let Some(backend) = backend {
        form = form.text("backend", backend.to_owned());
    }
    let part =
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str(content_type)?;
    let mut request = api.http.post(api.url("/storage/upload/")).multipart(form.part("file", part));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

async fn stored_files(db: &TestDb) -> anyhow::Result<i64> {
    let mut conn = db.connect().await?;
    Ok(sqlx::query_scalar("select count(*) from storage_files").fetch_one(&mut conn).await?)
}

#[tokio::test]
async fn an_upload_streams_to_ipfs_and_reads_back_by_cid() -> anyhow::Result<()> {
    let stack = stack().await?;
    let session = stack.api.login_registered(&stack.chain.user(0)).await?;
    let token = Some(session.access.as_str());

    let bytes = random_bytes(900 * 1024);
    let (status, file) =
        upload(&stack.api, token, "photo.bin", "application/octet-stream", bytes.clone(), None)
            .await?;
    assert_eq!(status, 201, "{file}");
    let cid = file["cid"].as_str().unwrap_or_default().to_owned();
    assert!(cid.starts_with("bafy"), "a CIDv1: {file}");
    assert_eq!(file["size"], json!(bytes.len()));
    assert_eq!(file["backend"], "ipfs");
    assert_eq!(file["url"], json!(format!("{}/ipfs/{cid}", stack.ipfs().gateway_url)));

    // The same bytes come back from the node and through its gateway, and the node pins them.
    assert!(stack.ipfs().cat(&cid).await? == bytes, "cat returns the uploaded bytes");
    let answer = reqwest::get(file["url"].as_str().unwrap_or_default()).await?;
    let (gateway_status, headers) = (answer.status(), answer.headers().clone());
    let served = answer.bytes().await?;
    assert!(
        served.as_ref() == bytes.as_slice(),
        "the gateway serves the uploaded bytes: {gateway_status}, {} of {} bytes, {headers:?}, \
         starting {:?}",
        served.len(),
        bytes.len(),
        String::from_utf8_lossy(&served[..served.len().min(200)])
    );
    assert!(stack.ipfs().pinned(&cid).await?);

    // Its shareable link serves the bytes to anyone, with its type and name.
    let link = file["share_link"].as_str().unwrap_or_default().to_owned();
    let shared = reqwest::get(stack.api.url(&link)).await?;
    assert_eq!(shared.status(), 200);
    assert_eq!(shared.headers()["content-type"], "application/octet-stream");
    assert_eq!(shared.headers()["content-security-policy"], "sandbox");
    assert!(
        shared.headers()["content-disposition"].to_str()?.contains("photo.bin"),
        "{:?}",
        shared.headers()
    );
    assert!(shared.bytes().await?.as_ref() == bytes.as_slice(), "the link serves the bytes");
    let unknown = stack.api.get(&format!("/storage/shared/{}", "0".repeat(32)), None).await?;
    assert_eq!((unknown.0, problem_type(&unknown.1).as_str()), (404, "not-found"));
    let malformed = stack.api.get("/storage/shared/zz", None).await?;
    assert_eq!((malformed.0, problem_type(&malformed.1).as_str()), (404, "not-found"));

    // The first upload opened the account's storage service on-chain; the next one reuses it.
    let service = file["service_id"].as_i64().unwrap_or_default();
    eventually("the storage service to be indexed", || async {
        let (_, list) = stack.api.get("/services", token).await?;
        Ok(list.as_array().is_some_and(|l| {
            l.iter().any(|s| s["id"] == service && s["kind"] == "storage" && s["state"] == "active")
        }))
    })
    .await?;
    let (status, page) = upload(
        &stack.api,
        token,
        "index.html",
        "application/octet-stream",
        b"<h1>hi</h1>".to_vec(),
        Some("ipfs"),
    )
    .await?;
    assert_eq!(status, 201, "{page}");
    assert_eq!(
        (page["service_id"].as_i64(), page["content_type"].as_str()),
        (Some(service), Some("text/html"))
    );
    assert_eq!(stack.ipfs().cat(page["cid"].as_str().unwrap_or_default()).await?, b"<h1>hi</h1>");
    assert_eq!(stored_files(&stack.db).await?, 2);

    // Any tier lists its files page by page and deletes them; deleted content is unpinned.
    let (status, listed) = stack.api.get("/storage/manage/files?limit=1", token).await?;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        (listed["files"][0]["cid"].as_str(), listed["files"][0]["backend"].as_str()),
        (Some(cid.as_str()), Some("ipfs"))
    );
    let cursor = listed["next_cursor"].as_str().unwrap_or_default().to_owned();
    let (_, rest) =
        stack.api.get(&format!("/storage/manage/files?limit=1&cursor={cursor}"), token).await?;
    assert_eq!((&rest["files"][0]["id"], &rest["next_cursor"]), (&page["id"], &Value::Null));
    let other = stack.api.login_registered(&stack.chain.user(5)).await?;
    let path = format!("/storage/manage/files/{}", file["id"]);
    let (status, _) =
        stack.api.send(reqwest::Method::DELETE, &path, Some(&other.access), None).await?;
    assert_eq!(status, 404, "another account's file");
    assert!(stack.ipfs().pinned(&cid).await?);
    let (status, _) = stack.api.send(reqwest::Method::DELETE, &path, token, None).await?;
    assert_eq!(status, 204);
    assert!(!stack.ipfs().pinned(&cid).await?, "the deleted file is unpinned");
    assert_eq!(stack.api.send(reqwest::Method::DELETE, &path, token, None).await?.0, 404);
    assert_eq!(stack.api.get(&link, None).await?.0, 404, "its link is gone");
    assert_eq!(stored_files(&stack.db).await?, 2, "deleting marks the record");
    Ok(())
}

#[tokio::test]
async fn uploads_past_the_tier_limits_or_malformed_are_refused_and_nothing_is_recorded()
-> anyhow::Result<()> {
    let stack = stack().await?;
    let session = stack.api.login_registered(&stack.chain.user(1)).await?;
    let token = Some(session.access.as_str());
    let api = &stack.api;

    let (status, problem) =
        upload(api, None, "a.bin", "application/octet-stream", vec![1; 10], None).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (401, "unauthorized"), "{problem}");

    // Over the Free tier's 1 MiB per file: refused while streaming.
    let (status, problem) = upload(
        api,
        token,
        "big.bin",
        "application/octet-stream",
        random_bytes(2 * 1024 * 1024),
        None,
    )
    .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (413, "file-too-large"), "{problem}");
    assert_eq!(stored_files(&stack.db).await?, 0);
    assert_eq!(stack.ipfs().pins().await?, 0, "the cut-off upload is not pinned");

    // 1 MiB fits; the next 1 MiB would pass the 1.5 MiB quota.
    let (status, file) =
        upload(api, token, "one.bin", "application/octet-stream", random_bytes(1024 * 1024), None)
            .await?;
    assert_eq!(status, 201, "{file}");
    let (status, problem) =
        upload(api, token, "two.bin", "application/octet-stream", random_bytes(1024 * 1024), None)
            .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (413, "storage-quota-exceeded"),
        "{problem}"
    );

    // Malformed requests.
    let (status, problem) =
        upload(api, token, "a.bin", "application/octet-stream", vec![1; 10], Some("arweave"))
            .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "storage-backend-unavailable"),
        "{problem}"
    );
    let (status, problem) =
        upload(api, token, "", "application/octet-stream", vec![1; 10], None).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (400, "bad-request"), "{problem}");
    let response = api
        .http
        .post(api.url("/storage/upload"))
        .bearer_auth(&session.access)
        .multipart(reqwest::multipart::Form::new().text("note", "no file"))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let response = api
        .http
        .post(api.url("/storage/upload"))
        .bearer_auth(&session.access)
        .json(&json!({ "file": "not multipart" }))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    assert_eq!(stored_files(&stack.db).await?, 1, "only the upload that fitted is recorded");

    // Paused storage (through /storage/manage) takes no uploads.
    let service = file["service_id"].as_i64().unwrap_or_default();
    eventually("the storage service to be indexed", || async {
        Ok(api.get("/storage/manage", token).await?.1[0]["id"] == service)
    })
    .await?;
    let (_, manage) = api.get("/storage/manage/", token).await?;
    assert_eq!(
        (manage[0]["files"].as_i64(), manage[0]["bytes"].as_i64()),
        (Some(1), Some(1024 * 1024)),
        "{manage}"
    );
    let stranger = stack.api.login_registered(&stack.chain.user(5)).await?;
    let path = format!("/storage/manage/{service}/pause");
    assert_eq!(api.post(&path, Some(&stranger.access), &json!({})).await?.0, 404, "not theirs");
    let (status, tx) = api.post(&path, token, &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    eventually("the pause to be indexed", || async {
        Ok(api.get("/storage/manage", token).await?.1[0]["state"] == "paused")
    })
    .await?;
    let (status, problem) = api.get(file["share_link"].as_str().unwrap_or_default(), None).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (403, "forbidden"),
        "paused storage is not served: {problem}"
    );
    let (status, problem) =
        upload(api, token, "c.bin", "application/octet-stream", vec![1; 10], None).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (409, "conflict"), "{problem}");
    Ok(())
}

async fn send(
    api: &TestApi,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    api.send(method, path, Some(token), body.as_ref()).await
}

#[tokio::test]
async fn paid_accounts_keep_files_in_folders_and_nobody_else_sees_them() -> anyhow::Result<()> {
    use decentraspace_abi::{AccountRegistry, Tier};
    use reqwest::Method;
    let stack = stack().await?;
    let api = &stack.api;
    let (free, paid, other) = (
        stack.api.login_registered(&stack.chain.user(2)).await?,
        stack.api.login_registered(&stack.chain.user(3)).await?,
        stack.api.login_registered(&stack.chain.user(4)).await?,
    );
    let operator = stack.chain.provider_as(stack.chain.role(decentraspace_tests::Role::Operator));
    let accounts =
        AccountRegistry::new(stack.chain.deployment.contracts.account_registry, &operator);
    for n in [3, 4] {
        accounts
            .setTier(stack.chain.user(n).address(), Tier::Paid.into(), 0)
            .send()
            .await?
            .get_receipt()
            .await?;
        // Paid storage opens with its first hour in the balance.
        stack.chain.credit(stack.chain.user(n).address(), 1_000_000_000).await?;
    }
    eventually("the upgrades to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&other.access)).await?.1["tier"] == "paid"
            && api.get("/auth/tier", Some(&paid.access)).await?.1["tier"] == "paid")
    })
    .await?;

    // Free accounts have no folders.
    let (status, problem) =
        send(api, Method::POST, "/storage/folder/", &free.access, Some(json!({ "name": "docs" })))
            .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "paid-tier-required"), "{problem}");

    let token = paid.access.as_str();
    let (status, docs) =
        send(api, Method::POST, "/storage/folder", token, Some(json!({ "name": "docs" }))).await?;
    assert_eq!(status, 201, "{docs}");
    let docs_id = docs["id"].as_i64().unwrap_or_default();
    let (status, drafts) = send(
        api,
        Method::POST,
        "/storage/folder",
        token,
        Some(json!({ "name": "drafts", "parent_id": docs_id })),
    )
    .await?;
    assert_eq!(status, 201, "{drafts}");
    let drafts_id = drafts["id"].as_i64().unwrap_or_default();
    for (bad, why) in [(json!({ "name": "" }), "empty"), (json!({ "name": "a/b" }), "slash")] {
        assert_eq!(
            send(api, Method::POST, "/storage/folder", token, Some(bad)).await?.0,
            400,
            "{why}"
        );
    }
    let (status, _) =
        send(api, Method::POST, "/storage/folder", token, Some(json!({ "name": "docs" }))).await?;
    assert_eq!(status, 409, "a name is unique among siblings");

    // Files go into folders and list page by page.
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, file) = upload(
            api,
            Some(token),
            &format!("f{n}.txt"),
            "text/plain",
            format!("file {n}").into_bytes(),
            None,
        )
        .await?;
        assert_eq!(status, 201, "{file}");
        let id = file["id"].as_i64().unwrap_or_default();
        let path = format!("/storage/folder/files/{id}");
        assert_eq!(
            send(api, Method::PATCH, &path, token, Some(json!({ "folder_id": docs_id }))).await?.0,
            204
        );
        ids.push(id);
    }
    let (status, page) =
        api.get(&format!("/storage/folder?folder_id={docs_id}&limit=2"), Some(token)).await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["folders"][0]["id"], json!(drafts_id));
    assert_eq!(page["files"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
    let (_, rest) = api
        .get(&format!("/storage/folder?folder_id={docs_id}&limit=2&cursor={cursor}"), Some(token))
        .await?;
    assert_eq!(
        (rest["files"][0]["id"].as_i64(), &rest["next_cursor"]),
        (Some(ids[2]), &Value::Null),
        "{rest}"
    );

    // Rename and move; never into itself.
    let (status, renamed) = send(
        api,
        Method::PATCH,
        &format!("/storage/folder/{drafts_id}"),
        token,
        Some(json!({ "name": "old drafts", "to_root": true })),
    )
    .await?;
    assert_eq!(
        (status, renamed["parent_id"].clone(), renamed["name"].as_str()),
        (200, Value::Null, Some("old drafts"))
    );
    send(
        api,
        Method::PATCH,
        &format!("/storage/folder/{drafts_id}"),
        token,
        Some(json!({ "parent_id": docs_id })),
    )
    .await?;
    let (status, problem) = send(
        api,
        Method::PATCH,
        &format!("/storage/folder/{docs_id}"),
        token,
        Some(json!({ "parent_id": drafts_id })),
    )
    .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "folder-move-into-itself"),
        "{problem}"
    );

    // Another account sees none of it and changes none of it, nor puts anything into it.
    let theirs = other.access.as_str();
    let docs_path = format!("/storage/folder/{docs_id}");
    let (status, _) =
        send(api, Method::PATCH, &docs_path, theirs, Some(json!({ "name": "mine" }))).await?;
    assert_eq!(status, 404, "renaming another's folder");
    let (status, _) = send(
        api,
        Method::POST,
        "/storage/folder",
        theirs,
        Some(json!({ "name": "x", "parent_id": docs_id })),
    )
    .await?;
    assert_eq!(status, 404, "a folder inside another's folder");
    let (_, their_folder) =
        send(api, Method::POST, "/storage/folder", theirs, Some(json!({ "name": "theirs" })))
            .await?;
    let their_folder_path = format!("/storage/folder/{}", their_folder["id"]);
    let (status, _) =
        send(api, Method::PATCH, &their_folder_path, theirs, Some(json!({ "parent_id": docs_id })))
            .await?;
    assert_eq!(status, 404, "moving a folder under another's folder");
    // The same bytes as one of the owner's files: one CID, two files.
    let (status, their_file) =
        upload(api, Some(theirs), "copy.txt", "text/plain", b"file 0".to_vec(), None).await?;
    assert_eq!(status, 201, "{their_file}");
    let shared_cid = their_file["cid"].as_str().unwrap_or_default().to_owned();
    let their_file_path = format!("/storage/folder/files/{}", their_file["id"]);
    let (status, _) =
        send(api, Method::PATCH, &their_file_path, theirs, Some(json!({ "folder_id": docs_id })))
            .await?;
    assert_eq!(status, 404, "moving a file into another's folder");
    let (status, _) = send(api, Method::PATCH, &their_file_path, theirs, Some(json!({}))).await?;
    assert_eq!(status, 400, "folder_id is required");
    assert_eq!(
        api.get(&format!("/storage/folder?folder_id={docs_id}"), Some(theirs)).await?.0,
        404
    );
    let path = format!("/storage/folder/files/{}", ids[0]);
    assert_eq!(
        send(api, Method::PATCH, &path, theirs, Some(json!({ "folder_id": null }))).await?.0,
        404
    );
    assert_eq!(
        send(
            api,
            Method::DELETE,
            &format!("/storage/folder/{docs_id}?recursive=true"),
            theirs,
            None
        )
        .await?
        .0,
        404
    );
    let (_, their_root) = api.get("/storage/folder", Some(theirs)).await?;
    // Only their own folder and file.
    assert_eq!(
        (
            their_root["folders"].as_array().map(Vec::len),
            their_root["files"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1)),
        "{their_root}"
    );

    // The folder's shareable link lists what it holds, each item with its own link.
    let folder_link = docs["share_link"].as_str().unwrap_or_default().to_owned();
    let (status, listing) = api.get(&folder_link, None).await?;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["files"].as_array().map(Vec::len), Some(3), "{listing}");
    assert_eq!(listing["folders"][0]["name"], "old drafts");
    let first_file_link = listing["files"][0]["share_link"].as_str().unwrap_or_default().to_owned();
    let (status, _) = api.get(&first_file_link, None).await?;
    assert_eq!(status, 200);

    // Each folder is an IPFS directory of what it holds, rebuilt as that changes.
    let docs_cid = || async {
        let (_, root) = api.get("/storage/folder", Some(token)).await?;
        anyhow::Ok(root["folders"][0]["cid"].as_str().map(str::to_owned))
    };
    // No change waits for the rebuild job (each change marks its folders stale in its own
    // transaction, so a change answered is a change counted here).
    let built = || async {
        let stale: i64 = sqlx::query_scalar(
            "select count(*) from storage_folders where cid_version > cid_built and deleted_at is null",
        )
        .fetch_one(&mut stack.db.connect().await?)
        .await?;
        anyhow::Ok(stale == 0)
    };
    eventually("the directories to be built", built).await?;
    let first = docs_cid().await?.unwrap_or_default();
    assert_eq!(stack.ipfs().cat(&format!("{first}/f2.txt")).await?, b"file 2");
    assert_eq!(stack.ipfs().cat(&format!("{first}/f0.txt")).await?, b"file 0");
    assert!(stack.ipfs().pinned(&first).await?, "the directory is pinned");
    let f2 = format!("/storage/folder/files/{}", ids[2]);
    assert_eq!(
        send(api, Method::PATCH, &f2, token, Some(json!({ "folder_id": null }))).await?.0,
        204
    );
    eventually("the directory without the file to be built", built).await?;
    let without = docs_cid().await?.unwrap_or_default();
    assert_ne!(without, first);
    assert!(stack.ipfs().cat(&format!("{without}/f2.txt")).await.is_err(), "f2 left the folder");
    assert_eq!(stack.ipfs().cat(&format!("{without}/f1.txt")).await?, b"file 1");
    let (status, _) =
        send(api, Method::PATCH, &f2, token, Some(json!({ "folder_id": docs_id }))).await?;
    assert_eq!(status, 204);
    eventually("the directory with the file again to be built", built).await?;
    assert_eq!(docs_cid().await?, Some(first.clone()), "the same content, the same CID");
    eventually("the replaced directory to be unpinned", || async {
        Ok(!stack.ipfs().pinned(&without).await?)
    })
    .await?;

    // A non-empty folder goes only when asked recursively, and its files are unpinned.
    let pins = stack.ipfs().pins().await?;
    let (status, problem) =
        send(api, Method::DELETE, &format!("/storage/folder/{docs_id}"), token, None).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (409, "conflict"), "{problem}");
    assert_eq!(
        send(
            api,
            Method::DELETE,
            &format!("/storage/folder/{docs_id}?recursive=true"),
            token,
            None
        )
        .await?
        .0,
        204
    );
    // Its two files and its directory (its empty sub-folder's directory is also another
    // account's empty folder's, so it stays).
    eventually("the deleted files and directory to be unpinned", || async {
        Ok(stack.ipfs().pins().await? == pins - 3)
    })
    .await?;
    assert!(
        stack.ipfs().pinned(&shared_cid).await?,
        "but not content another account still stores"
    );
    let (_, root) = api.get("/storage/folder", Some(token)).await?;
    assert_eq!(
        (root["folders"].as_array().map(Vec::len), root["files"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{root}"
    );
    assert_eq!(api.get(&format!("/storage/folder?folder_id={docs_id}"), Some(token)).await?.0, 404);
    assert_eq!(api.get(&folder_link, None).await?.0, 404, "a deleted folder's link is gone");
    assert_eq!(api.get(&first_file_link, None).await?.0, 404, "so are its files' links");
    Ok(())
}
