//! Site hosting end to end against a real IPFS node, anvil, Postgres, the indexer and the API:
//! an uploaded archive is deployed by the deploy job, added to IPFS as a directory and served by
//! the gateway by `Host`; a new deployment replaces it and a rollback brings the old one back;
//! unsafe archives fail without touching what is served; other accounts see nothing; expired and
//! suspended sites are not served; the analytics count exactly the requests the test made; a
//! source with a build script is built in the sandbox, and a failed build changes nothing.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use alloy::{primitives::U256, providers::Provider};
use decentraspace_abi::ServiceRegistry;
use decentraspace_tests::{
    Role, SseReader, Stack, TestApi, eventually, problem_type, wait_for_checkpoint,
};
use serde_json::{Value, json};

const DOMAIN: &str = "sites.test";

/// The stack; `uptime_secs` 0 leaves the prober off (its requests would count as traffic).
async fn stack(uptime_secs: u64) -> anyhow::Result<Stack> {
    Stack::builder()
        .ipfs()
        .configure(move |config, _| {
            config.sites_domain = DOMAIN.into();
            config.site_url_template = format!("http://{{site}}.{DOMAIN}");
            config.uptime_interval_secs = uptime_secs;
            config.deploy_max_archive_bytes = 8 * 1024 * 1024;
        })
        .start()
        .await
}

async fn indexed(stack: &Stack) -> anyhow::Result<()> {
    let head = alloy::providers::Provider::get_block_number(&stack.chain.reader()).await?;
    wait_for_checkpoint(&stack.db, stack.chain.chain_id(), head, Duration::from_secs(30)).await
}

/// A tar.gz holding `files` under one top folder, as GitHub's tarballs do; `raw` entries are
/// written with their names as given (an attacker's archive).
fn tar_gz(top: &str, files: &[(&str, &[u8])], raw: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("{top}/{name}"), *data)?;
    }
    for (name, data) in raw {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner()?)?;
    Ok(gz.finish()?)
}

/// Posts a deployment: its status and body.
async fn deploy(
    api: &TestApi,
    token: &str,
    site: &str,
    fields: &[(&str, &str)],
    archive: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let mut form = reqwest::multipart::Form::new().text("site", site.to_owned());
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let part = reqwest::multipart::Part::bytes(archive).file_name("site.tar.gz");
    let response = api
        .http
        .post(api.url("/hosting/deploy"))
        .bearer_auth(token)
        .multipart(form.part("archive", part))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

/// A gateway request for `path` on `site`: status, headers and body.
async fn visit(
    api: &TestApi,
    site: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    api.gateway_current().await?;
    let mut request =
        api.http.get(format!("{}{path}", api.gateway)).header("host", format!("{site}.{DOMAIN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Ok((status, headers, response.bytes().await?.to_vec()))
}

const V1_INDEX: &[u8] = b"<!doctype html><h1>blog v1</h1>";
const V2_INDEX: &[u8] = b"<!doctype html><h1>blog v2</h1>";

#[tokio::test]
async fn files_are_cached_by_their_names_served_in_ranges_to_head_and_compressed_once()
-> anyhow::Result<()> {
    let stack = stack(0).await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(0)).await?;
    let mut video = vec![0u8; 3 * 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut video);
    let text = b"0123456789abcdefghij";
    let script = "export function greet(name) { return `hello, ${name}`; }\n".repeat(500);
    let archive = tar_gz(
        "media",
        &[
            ("index.html", b"<h1>media</h1>"),
            ("assets/app-3f9a1c2b.js", b"console.log(1)"),
            ("style.css", b"body{}"),
            ("notes.txt", text),
            ("video.bin", &video),
            ("lib.js", script.as_bytes()),
        ],
        &[],
    )?;
    let (status, queued) = deploy(api, &owner.access, "media", &[], archive).await?;
    assert_eq!(status, 202, "{queued}");
    let live = api.deployment_finished(&owner.access, queued["id"].as_i64().unwrap()).await?;
    assert_eq!(live["state"], "live", "{live}");

    // Pages and plain names revalidate; hashed names are kept for a year.
    for (path, cache) in [
        ("/", "no-cache"),
        ("/assets/app-3f9a1c2b.js", "public, max-age=31536000, immutable"),
        ("/style.css", "public, max-age=0, must-revalidate"),
    ] {
        let (status, headers, _) = visit(api, "media", path, &[]).await?;
        assert_eq!((status, headers["cache-control"].to_str()?), (200, cache), "{path}");
        assert_eq!(headers["accept-ranges"], "bytes");
    }

    // One range of a small file (from memory) and of a large one (read from the node at its
    // offset), a suffix, and what cannot be satisfied.
    let (status, headers, body) =
        visit(api, "media", "/notes.txt", &[("range", "bytes=2-5")]).await?;
    assert_eq!((status, body.as_slice()), (206, b"2345".as_slice()));
    assert_eq!(headers["content-range"], "bytes 2-5/20");
    let (status, headers, body) =
        visit(api, "media", "/video.bin", &[("range", "bytes=1048576-1048675")]).await?;
    assert_eq!(status, 206);
    assert_eq!(headers["content-range"], format!("bytes 1048576-1048675/{}", video.len()));
    assert_eq!(headers["content-length"], "100");
    assert!(body == video[1_048_576..1_048_676], "the range's bytes");
    let (status, _, body) = visit(api, "media", "/video.bin", &[("range", "bytes=-10")]).await?;
    assert_eq!(status, 206);
    assert!(body == video[video.len() - 10..], "the last 10 bytes");
    let (status, headers, body) =
        visit(api, "media", "/notes.txt", &[("range", "bytes=20-")]).await?;
    assert_eq!((status, body.len()), (416, 0));
    assert_eq!(headers["content-range"], "bytes */20");
    // A range of a file that changed since (its tag is another) is answered whole.
    let (status, _, body) =
        visit(api, "media", "/notes.txt", &[("range", "bytes=2-5"), ("if-range", "\"bafyold\"")])
            .await?;
    assert_eq!((status, body.as_slice()), (200, text.as_slice()));

    // HEAD: the headers of a GET, no body.
    api.gateway_current().await?;
    let response = api
        .http
        .head(format!("{}/video.bin", api.gateway))
        .header("host", format!("media.{DOMAIN}"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], video.len().to_string().as_str());
    assert!(response.bytes().await?.is_empty());

    // Text files go out as the copy made at deploy that the client takes, each its own tag.
    let log = live["log"].as_str().unwrap_or_default();
    assert!(log.contains("files compressed once (brotli and gzip): 1"), "{log}");
    let (status, headers, body) =
        visit(api, "media", "/lib.js", &[("accept-encoding", "gzip, br")]).await?;
    assert_eq!((status, headers["content-encoding"].to_str()?), (200, "br"));
    assert_eq!(headers["vary"], "accept-encoding");
    assert!(body.len() * 10 < script.len(), "{} of {}", body.len(), script.len());
    let mut clear = Vec::new();
    brotli::BrotliDecompress(&mut body.as_slice(), &mut clear)?;
    assert!(clear == script.as_bytes(), "brotli decodes to the file");
    let br_tag = headers["etag"].to_str()?.to_owned();
    let (status, headers, body) =
        visit(api, "media", "/lib.js", &[("accept-encoding", "br;q=0, gzip")]).await?;
    assert_eq!((status, headers["content-encoding"].to_str()?), (200, "gzip"));
    let mut clear = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body.as_slice()), &mut clear)?;
    assert_eq!(clear, script, "gzip decodes to the file");
    let (status, headers, body) = visit(api, "media", "/lib.js", &[]).await?;
    assert_eq!((status, body.as_slice()), (200, script.as_bytes()));
    assert!(headers.get("content-encoding").is_none());
    assert_ne!(headers["etag"].to_str()?, br_tag, "each copy has its own tag");
    let (status, _, body) =
        visit(api, "media", "/lib.js", &[("accept-encoding", "br"), ("if-none-match", &br_tag)])
            .await?;
    assert_eq!((status, body.len()), (304, 0));
    // A range is of the file itself; small files are never compressed.
    let (status, headers, body) =
        visit(api, "media", "/lib.js", &[("accept-encoding", "br"), ("range", "bytes=0-5")])
            .await?;
    assert_eq!((status, body.as_slice()), (206, b"export".as_slice()));
    assert!(headers.get("content-encoding").is_none());
    let (_, headers, _) = visit(api, "media", "/style.css", &[("accept-encoding", "br")]).await?;
    assert!(headers.get("content-encoding").is_none() && headers.get("vary").is_none());
    Ok(())
}

#[tokio::test]
async fn a_deployed_site_is_served_by_host_replaced_and_rolled_back() -> anyhow::Result<()> {
    let stack = stack(0).await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(0)).await?;
    let token = owner.access.as_str();

    // v1: a GitHub-style tarball whose build output is in dist/, with a 3 MiB file that does
    // not compress (the archive is past any default body limit).
    let logo: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut video = vec![0u8; 3 * 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut video);
    let v1 = tar_gz(
        "me-blog-1a2b3c",
        &[
            ("README.md", b"# blog"),
            ("dist/index.html", V1_INDEX),
            ("dist/about/index.html", b"<p>about</p>"),
            ("dist/css/app.css", b"body { color: red }"),
            ("dist/logo.png", &logo),
            ("dist/404.html", b"<p>no such page</p>"),
            ("dist/media/video.bin", &video),
        ],
        &[],
    )?;
    assert!(v1.len() > 3 * 1024 * 1024);
    let (status, queued) = deploy(api, token, "blog", &[("spa_fallback", "false")], v1).await?;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["state"], "queued");
    let first = queued["id"].as_i64().expect("id");
    let live = api.deployment_finished(token, first).await?;
    assert_eq!(live["state"], "live", "{live}");
    assert_eq!(live["files"], 6, "dist/ is served, README.md is not: {live}");
    assert_eq!(live["current"], true);
    let log = live["log"].as_str().unwrap_or_default();
    assert!(log.contains("serving me-blog-1a2b3c/dist"), "{log}");
    let cid = live["cid"].as_str().expect("cid").to_owned();
    assert!(cid.starts_with("bafy"), "a CIDv1 directory: {cid}");

    // The gateway serves it by Host, with types and tags; the node has the same bytes by CID.
    let (status, headers, body) = visit(api, "blog", "/", &[("user-agent", "a")]).await?;
    assert_eq!((status, body.as_slice()), (200, V1_INDEX));
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let etag = headers["etag"].to_str()?.to_owned();
    assert_eq!(stack.ipfs().cat(&format!("{cid}/index.html")).await?, V1_INDEX);
    assert_eq!(stack.ipfs().cat(&format!("{cid}/logo.png")).await?, logo);
    let (status, _, body) =
        visit(api, "blog", "/", &[("user-agent", "a"), ("if-none-match", &etag)]).await?;
    assert_eq!((status, body.len()), (304, 0));
    let (status, headers, body) = visit(api, "blog", "/logo.png", &[("user-agent", "a")]).await?;
    assert_eq!((status, headers["content-type"].to_str()?), (200, "image/png"));
    assert!(body == logo, "the logo's bytes");
    let (status, _, body) = visit(api, "blog", "/media/video.bin", &[("user-agent", "a")]).await?;
    assert_eq!(status, 200);
    assert!(body == video, "the 3 MiB file's bytes");
    let (status, headers, _) = visit(api, "blog", "/css/app.css", &[("user-agent", "b")]).await?;
    assert_eq!((status, headers["content-type"].to_str()?), (200, "text/css; charset=utf-8"));
    let (status, _, body) = visit(api, "blog", "/about", &[("user-agent", "b")]).await?;
    assert_eq!((status, body.as_slice()), (200, b"<p>about</p>".as_slice()));
    let (status, _, body) = visit(api, "blog", "/nope", &[("user-agent", "b")]).await?;
    assert_eq!(
        (status, body.as_slice()),
        (404, b"<p>no such page</p>".as_slice()),
        "the site's 404.html"
    );
    let (status, _, _) =
        visit(api, "blog", "/..%2f..%2fetc%2fpasswd", &[("user-agent", "b")]).await?;
    assert_eq!(status, 400);
    let (status, _, body) = visit(api, "unknown", "/", &[]).await?;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("Site not found"));

    // v2, a zip at the top: replaces v1.
    let v2 = zip(&[("index.html", V2_INDEX), ("app.js", b"console.log(2)")])?;
    let (status, queued) = deploy(api, token, "blog", &[], v2).await?;
    assert_eq!(status, 202, "{queued}");
    let second = queued["id"].as_i64().expect("id");
    assert_eq!(api.deployment_finished(token, second).await?["state"], "live");
    let (status, _, body) = visit(api, "blog", "/", &[("user-agent", "a")]).await?;
    assert_eq!((status, body.as_slice()), (200, V2_INDEX));

    // An archive that climbs out fails, and the site keeps serving v2.
    let evil = tar_gz("x", &[("index.html", b"pwned")], &[("../../escaped.html", b"pwned")])?;
    let (status, queued) = deploy(api, token, "blog", &[], evil).await?;
    assert_eq!(status, 202, "{queued}");
    let failed = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(failed["state"], "failed");
    assert!(failed["error"].as_str().unwrap_or_default().contains("unsafe archive"), "{failed}");
    assert!(!std::env::temp_dir().join("escaped.html").exists());
    let (_, _, body) = visit(api, "blog", "/", &[("user-agent", "a")]).await?;
    assert_eq!(body.as_slice(), V2_INDEX);

    // Rollback serves v1 again.
    let (status, rolled) =
        api.post(&format!("/hosting/deploy/{first}/rollback"), Some(token), &json!({})).await?;
    assert_eq!((status, &rolled["current"]), (200, &json!(true)), "{rolled}");
    let (_, _, body) = visit(api, "blog", "/", &[("user-agent", "a")]).await?;
    assert_eq!(body.as_slice(), V1_INDEX);
    let (status, history) = api.get("/hosting/deploy?site=blog&limit=2", Some(token)).await?;
    assert_eq!(status, 200);
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2));
    let next = history["next_cursor"].as_str().expect("a second page").to_owned();
    let (_, rest) =
        api.get(&format!("/hosting/deploy?site=blog&cursor={next}"), Some(token)).await?;
    assert_eq!(rest["items"][0]["id"], first);
    let (status, site) = api.get("/hosting/status/blog", Some(token)).await?;
    assert_eq!(status, 200);
    assert_eq!((&site["serving"], &site["state"]), (&json!(true), &json!("active")), "{site}");
    assert_eq!(site["current_deployment"]["id"], first);
    assert_eq!(site["url"], format!("http://blog.{DOMAIN}"));
    assert_eq!(site["ipfs_url"], format!("{}/ipfs/{cid}", stack.ipfs().gateway_url));

    // Another account reads and changes nothing of it.
    let other = stack.api.login_registered(&stack.chain.user(1)).await?;
    let theirs = other.access.as_str();
    for path in [
        format!("/hosting/deploy/{first}"),
        "/hosting/status/blog".into(),
        "/hosting/deploy?site=blog".into(),
    ] {
        let (status, body) = api.get(&path, Some(theirs)).await?;
        assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"), "{path}");
    }
    let (status, _) =
        api.post(&format!("/hosting/deploy/{second}/rollback"), Some(theirs), &json!({})).await?;
    assert_eq!(status, 404);
    let (status, body) = deploy(api, theirs, "blog", &[], zip(&[("index.html", b"mine")])?).await?;
    assert_eq!((status, problem_type(&body).as_str()), (409, "conflict"), "{body}");
    let (status, _, body) = visit(api, "blog", "/", &[("user-agent", "a")]).await?;
    assert_eq!((status, body.as_slice()), (200, V1_INDEX));
    let (status, _) = api.get("/hosting/status", None).await?;
    assert_eq!(status, 401);

    // Bad deploys: no archive, a bad name, not an archive.
    let (status, body) = deploy(api, token, "-bad-", &[], zip(&[("index.html", b"x")])?).await?;
    assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{body}");
    let (status, body) = deploy(api, token, "blog", &[("spa_fallback", "maybe")], vec![1]).await?;
    assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{body}");
    let (status, queued) =
        deploy(api, token, "blog", &[], b"<html>not an archive".to_vec()).await?;
    assert_eq!(status, 202);
    let failed = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert!(
        failed["error"].as_str().unwrap_or_default().contains("not a tar.gz or zip"),
        "{failed}"
    );

    // An archive over the limit is refused while it streams; a Free account hosts one site, and
    // a refused first deployment holds no name.
    let mut huge = vec![0u8; 9 * 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut huge);
    let (status, body) = deploy(api, token, "blog", &[], huge).await?;
    assert_eq!((status, problem_type(&body).as_str()), (413, "archive-too-large"), "{body}");
    let (status, body) = deploy(api, token, "second", &[], zip(&[("index.html", b"2")])?).await?;
    assert_eq!(status, 403, "{body}");
    let (_, sites) = api.get("/hosting/status", Some(token)).await?;
    let names: Vec<&str> =
        sites.as_array().expect("sites").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["blog"]);

    // The analytics count what the gateway served above, exactly: 12 requests to blog by two
    // user agents (the unknown site's request belongs to no site).
    let deadline = Instant::now() + Duration::from_secs(20);
    let analytics = loop {
        let (status, analytics) = api.get("/analytics/site?site=blog", Some(token)).await?;
        assert_eq!(status, 200, "{analytics}");
        if analytics["requests"] == 12 {
            break analytics;
        }
        assert!(Instant::now() < deadline, "12 requests recorded: {analytics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(analytics["visitors"], 2, "{analytics}");
    let statuses: Vec<(i64, i64)> = analytics["status_codes"]
        .as_array()
        .expect("status codes")
        .iter()
        .map(|s| (s["status"].as_i64().unwrap_or(0), s["requests"].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(statuses, [(200, 9), (304, 1), (400, 1), (404, 1)], "{analytics}");
    assert!(analytics["bytes"].as_i64().is_some_and(|b| b > 3 * 1024 * 1024), "{analytics}");
    assert!(analytics["load_time"]["p95_ms"].as_f64().is_some_and(|p| p > 0.0), "{analytics}");
    let (status, _) = api.get("/analytics/site?site=blog", Some(theirs)).await?;
    assert_eq!(status, 404);
    Ok(())
}

/// A zip archive of `files`.
fn zip(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        zip.start_file(*name, options)?;
        zip.write_all(data)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[tokio::test]
async fn expired_and_suspended_sites_are_not_served() -> anyhow::Result<()> {
    let stack = stack(1).await?;
    let (api, chain) = (&stack.api, &stack.chain);
    let owner = stack.api.login_registered(&stack.chain.user(2)).await?;
    let token = owner.access.as_str();
    let (status, queued) =
        deploy(api, token, "shop", &[], zip(&[("index.html", b"<p>shop</p>")])?).await?;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(
        api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?["state"],
        "live"
    );
    let (status, _, _) = visit(api, "shop", "/", &[]).await?;
    assert_eq!(status, 200);

    // The prober checks it through the gateway.
    eventually("an uptime check", || async {
        let site = api.get("/hosting/status/shop", Some(token)).await?.1;
        Ok(site["last_check"]["up"] == true && site["uptime_24h"] == 1.0)
    })
    .await?;

    // Only admins read or set the expiry.
    let (status, _) = api.get("/hosting/expire?site=shop", Some(token)).await?;
    assert_eq!(status, 403);
    let (status, _) = api
        .post("/hosting/expire", Some(token), &json!({"site": "shop", "expires_at": null}))
        .await?;
    assert_eq!(status, 403);
    let admin = api.login(&chain.role(Role::Admin)).await?;
    let (status, expiry) = api.get("/hosting/expire?site=shop", Some(&admin.access)).await?;
    assert_eq!((status, &expiry["expired"]), (200, &json!(false)), "{expiry}");
    assert!(expiry["expires_at"].is_string(), "a Free site has an expiry: {expiry}");
    let (status, body) = api.get("/hosting/expire?site=nosuch", Some(&admin.access)).await?;
    assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"));

    // Expired (set in the past by an admin): 410, and back once the expiry is lifted.
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let (status, tx) = api
        .post("/hosting/expire", Some(&admin.access), &json!({"site": "shop", "expires_at": past}))
        .await?;
    assert_eq!((status, &tx["status"]), (200, &json!("mined")), "{tx}");
    indexed(&stack).await?;
    let (_, expiry) = api.get("/hosting/expire?site=shop", Some(&admin.access)).await?;
    assert_eq!(expiry["expired"], true, "{expiry}");
    let (status, _, body) = visit(api, "shop", "/", &[]).await?;
    assert_eq!(status, 410);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    let (status, body) = deploy(api, token, "shop", &[], zip(&[("index.html", b"x")])?).await?;
    assert_eq!(status, 409, "an expired site takes no deployment: {body}");
    let (status, _) = api
        .post("/hosting/expire", Some(&admin.access), &json!({"site": "shop", "expires_at": null}))
        .await?;
    assert_eq!(status, 200);
    indexed(&stack).await?;
    let (status, _, _) = visit(api, "shop", "/", &[]).await?;
    assert_eq!(status, 200);

    // Suspended on-chain (as depletion does): 503.
    let service_id = api.get("/hosting/status/shop", Some(token)).await?.1["service_id"]
        .as_i64()
        .expect("a service");
    let operator = chain.provider_as(chain.role(Role::Operator));
    ServiceRegistry::new(chain.deployment.contracts.service_registry, &operator)
        .suspend(U256::from(service_id as u64))
        .send()
        .await?
        .get_receipt()
        .await?;
    indexed(&stack).await?;
    let (status, _, body) = visit(api, "shop", "/", &[]).await?;
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("suspended"));
    let (_, site) = api.get("/hosting/status/shop", Some(token)).await?;
    assert_eq!((&site["serving"], &site["state"]), (&json!(false), &json!("suspended")));
    Ok(())
}

/// A source with a `build` script: the files of a site built by Node.js.
fn source(build_js: &str) -> anyhow::Result<Vec<u8>> {
    let package = br#"{"name": "fixture-site", "version": "1.0.0", "private": true,
                       "scripts": {"build": "node build.js"}}"#;
    tar_gz(
        "me-app-9f8e7d",
        &[
            ("package.json", package),
            ("build.js", build_js.as_bytes()),
            ("src/page.txt", b"from source"),
        ],
        &[],
    )
}

/// Replaces the build settings of the site `webapp`.
async fn put_settings(api: &TestApi, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    api.send(reqwest::Method::PUT, "/hosting/settings/webapp", Some(token), Some(body)).await
}

const BUILD_JS: &str = r#"
const fs = require('fs');
fs.mkdirSync('dist/assets', { recursive: true });
const page = fs.readFileSync('src/page.txt', 'utf8');
fs.writeFileSync('dist/index.html', `<h1>${page}</h1>`);
fs.writeFileSync('dist/assets/app.js', 'console.log(1)');
console.log('wrote', fs.readdirSync('dist').length, 'entries');
"#;

#[tokio::test]
async fn a_source_is_built_in_the_sandbox_and_a_failed_build_changes_nothing() -> anyhow::Result<()>
{
    let stack = Stack::builder()
        .ipfs()
        .configure(|config, _| {
            config.sites_domain = DOMAIN.into();
            config.uptime_interval_secs = 0;
            config.build_time_limit_secs = 5;
        })
        .start()
        .await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(3)).await?;
    let token = owner.access.as_str();

    // npm installs (nothing to fetch) and runs the build script; dist/ is served, the source
    // is not.
    let (status, queued) = deploy(api, token, "webapp", &[], source(BUILD_JS)?).await?;
    assert_eq!(status, 202, "{queued}");
    let built = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(built["state"], "live", "{built}");
    assert_eq!(built["files"], 2, "{built}");
    let log = built["log"].as_str().unwrap_or_default();
    for line in [
        "$ npm install",
        "$ npm run build",
        "wrote 2 entries",
        "build finished in",
        "serving me-app-9f8e7d/dist",
    ] {
        assert!(log.contains(line), "{line:?} in the log:\n{log}");
    }
    let (status, _, body) = visit(api, "webapp", "/", &[]).await?;
    assert_eq!((status, body.as_slice()), (200, b"<h1>from source</h1>".as_slice()));
    for source_file in ["/package.json", "/build.js", "/src/page.txt"] {
        let (status, _, _) = visit(api, "webapp", source_file, &[]).await?;
        assert_eq!(status, 404, "{source_file} is source, not output");
    }
    let (status, _, body) = visit(api, "webapp", "/assets/app.js", &[]).await?;
    assert_eq!((status, body.as_slice()), (200, b"console.log(1)".as_slice()));

    // Build settings: read and replaced by the owner only, checked, and used from the next
    // deployment on (no install step, the script run directly).
    let (status, settings) = api.get("/hosting/settings/webapp", Some(token)).await?;
    assert_eq!((status, &settings["build_command"]), (200, &Value::Null), "{settings}");
    let chosen =
        json!({"install_command": "", "build_command": "node build.js", "output_dir": "./dist/"});
    let (status, saved) = put_settings(api, token, &chosen).await?;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(
        saved,
        json!({"root_dir": null, "install_command": "", "build_command": "node build.js", "output_dir": "dist", "branch_previews": null, "fork_previews": null})
    );
    assert_eq!(api.get("/hosting/settings/webapp", Some(token)).await?.1, saved);
    for bad in [
        json!({"root_dir": "../up"}),
        json!({"build_command": "a\nb"}),
        json!({"output_dir": "/etc"}),
        json!({"command": "x"}),
    ] {
        let (status, body) = put_settings(api, token, &bad).await?;
        assert!(matches!(status, 400 | 422), "{bad}: {status} {body}");
    }
    let other = stack.api.login_registered(&stack.chain.user(4)).await?;
    let theirs = other.access.as_str();
    assert_eq!(api.get("/hosting/settings/webapp", Some(theirs)).await?.0, 404);
    assert_eq!(put_settings(api, theirs, &json!({})).await?.0, 404);
    assert_eq!(api.get("/hosting/settings/webapp", None).await?.0, 401);
    let (_, queued) = deploy(api, token, "webapp", &[], source(BUILD_JS)?).await?;
    let rebuilt = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(rebuilt["state"], "live", "{rebuilt}");
    let log = rebuilt["log"].as_str().unwrap_or_default();
    assert!(log.contains("$ node build.js") && !log.contains("$ npm"), "{log}");

    // Settings left out are detected again.
    let (status, cleared) = put_settings(api, token, &json!({})).await?;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared.as_object().is_some_and(|s| s.values().all(Value::is_null)), "{cleared}");

    // Each failed build names its cause and leaves the live site as it was.
    let failing = [
        ("process.exit(3)", "the build command (npm run build) exited with status 3"),
        ("while (true) {}", "the build step was stopped: it ran longer than its time limit of 5 s"),
        (
            "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', 'x'); require('fs').symlinkSync('/etc/passwd', 'dist/passwd')",
            "the output's link passwd points outside the output or at no file",
        ),
        (
            "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', JSON.stringify(process.env))",
            "",
        ),
    ];
    for (script, error) in failing {
        let (status, queued) = deploy(api, token, "webapp", &[], source(script)?).await?;
        assert_eq!(status, 202, "{queued}");
        let done = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
        if error.is_empty() {
            // The build ran with only its own environment: none of the API's variables.
            assert_eq!(done["state"], "live", "{done}");
            let (_, _, body) = visit(api, "webapp", "/", &[]).await?;
            let env: serde_json::Map<String, Value> = serde_json::from_slice(&body)?;
            let database = &stack.db.url;
            assert!(!String::from_utf8_lossy(&body).contains(database.as_str()), "{env:?}");
            for name in env.keys() {
                let upper = name.to_uppercase();
                for secret in ["DATABASE", "SECRET", "TOKEN", "PRIVATE", "RPC", "CARGO"] {
                    assert!(!upper.contains(secret), "{name} reached the build: {env:?}");
                }
            }
            continue;
        }
        assert_eq!(
            (&done["state"], done["error"].as_str()),
            (&json!("failed"), Some(error)),
            "{done}"
        );
        let (status, _, body) = visit(api, "webapp", "/", &[]).await?;
        assert_eq!(
            (status, body.as_slice()),
            (200, b"<h1>from source</h1>".as_slice()),
            "{script}"
        );
    }
    Ok(())
}

/// A local registry holding `greeting-fixture`, and the stack whose builds install from it.
async fn with_registry() -> anyhow::Result<(decentraspace_tests::TestRegistry, Stack)> {
    let registry = decentraspace_tests::TestRegistry::start().await?;
    registry.publish(&[
        ("package.json", r#"{"name": "greeting-fixture", "version": "1.0.0", "main": "index.js"}"#),
        ("index.js", "module.exports = name => `hello, ${name}`;"),
    ])?;
    let address = registry.address()?;
    let stack = Stack::builder()
        .ipfs()
        .configure(move |config, _| {
            config.sites_domain = DOMAIN.into();
            config.uptime_interval_secs = 0;
            config.build_registry_url = Some(format!("http://{address}"));
        })
        .start()
        .await?;
    Ok((registry, stack))
}

#[tokio::test]
async fn an_install_fetches_from_the_configured_registry_and_the_build_step_is_offline()
-> anyhow::Result<()> {
    let (registry, stack) = with_registry().await?;
    let address = registry.address()?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(5)).await?;
    let token = owner.access.as_str();

    // The dependency comes from the registry during the install; the build itself, which tries
    // to reach the same registry, has no network.
    let package = br#"{"name": "fixture-site", "version": "1.0.0", "private": true,
                       "dependencies": {"greeting-fixture": "1.0.0"},
                       "scripts": {"build": "node build.js"}}"#;
    let build_js = format!(
        "const fs = require('fs'), greet = require('greeting-fixture');\n\
         fs.mkdirSync('dist');\n\
         fs.writeFileSync('dist/index.html', `<h1>${{greet('registry')}}</h1>`);\n\
         require('http').get('http://{address}/greeting-fixture', () => console.log('build online'))\n\
           .on('error', e => console.log('build offline', e.code));\n"
    );
    let source = tar_gz(
        "me-deps-1a2b3c",
        &[("package.json", package), ("build.js", build_js.as_bytes())],
        &[],
    )?;
    let (status, queued) = deploy(api, token, "depsite", &[], source.clone()).await?;
    assert_eq!(status, 202, "{queued}");
    let built = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    let log = built["log"].as_str().unwrap_or_default();
    assert_eq!(built["state"], "live", "{log}");
    assert!(log.contains("$ npm install") && log.contains("added 1 package"), "{log}");
    assert!(log.contains("build offline") && !log.contains("build online"), "{log}");
    let (status, _, body) = visit(api, "depsite", "/", &[]).await?;
    assert_eq!((status, body.as_slice()), (200, b"<h1>hello, registry</h1>".as_slice()));
    assert!(log.contains("build cache: new"), "{log}");
    assert!(!log.contains("install connected to the registry 0 times"), "{log}");

    // The same dependencies again: the install takes them from the site's build cache and
    // asks the registry nothing.
    let (status, queued) = deploy(api, token, "depsite", &[], source).await?;
    assert_eq!(status, 202, "{queued}");
    let again = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    let log = again["log"].as_str().unwrap_or_default();
    assert_eq!(again["state"], "live", "{log}");
    assert!(log.contains("build cache: reused"), "{log}");
    assert!(log.contains("install connected to the registry 0 times"), "{log}");
    Ok(())
}

#[tokio::test]
async fn build_secrets_reach_the_build_and_never_its_log_or_the_api() -> anyhow::Result<()> {
    let stack = stack(0).await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(6)).await?;
    let token = owner.access.as_str();
    let (status, queued) =
        deploy(api, token, "secretsite", &[], zip(&[("index.html", b"first")])?).await?;
    assert_eq!(status, 202, "{queued}");
    api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;

    // Set: the answer and every later read show the name, never the value.
    const SECRET: &str = "tok-5ecret-value-42";
    let set = |name: &str, body: Value| {
        let path = format!("/hosting/settings/secretsite/env/{name}");
        async move { api.send(reqwest::Method::PUT, &path, Some(token), Some(&body)).await }
    };
    let (status, saved) = set("API_TOKEN", json!({"value": SECRET})).await?;
    assert_eq!(
        (status, &saved["name"], &saved["scope"]),
        (200, &json!("API_TOKEN"), &json!("production")),
        "{saved}"
    );
    assert!(!saved.to_string().contains(SECRET), "{saved}");
    let (status, _) =
        set("PREVIEW_ONLY", json!({"value": "preview-value", "scope": "preview"})).await?;
    assert_eq!(status, 200);
    let (status, listed) = api.get("/hosting/settings/secretsite/env", Some(token)).await?;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(SECRET) && !listed.to_string().contains("preview-value"),
        "{listed}"
    );
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v["scope"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(names, [("PREVIEW_ONLY", "preview"), ("API_TOKEN", "production")]);
    for (name, body) in [
        ("1BAD", json!({"value": "x"})),
        ("PATH", json!({"value": "/evil"})),
        ("npm_config_registry", json!({"value": "http://evil"})),
        ("OK_NAME", json!({"value": "x".repeat(32 * 1024 + 1)})),
    ] {
        let (status, body) = set(name, body).await?;
        assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{name}: {body}");
    }
    let other = stack.api.login_registered(&stack.chain.user(7)).await?;
    let (status, _) = api.get("/hosting/settings/secretsite/env", Some(&other.access)).await?;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/hosting/settings/secretsite/env/API_TOKEN",
            Some(&other.access),
            Some(&json!({"value": "theirs"})),
        )
        .await?;
    assert_eq!(status, 404);

    // The build has the production value in its environment (it writes it into the page), its
    // log shows it masked, and the preview-only variable is not there.
    let build_js = "const v = process.env.API_TOKEN;\n\
                    console.log('token is', v, 'and again', v);\n\
                    console.log('preview only:', process.env.PREVIEW_ONLY === undefined ? 'absent' : 'present');\n\
                    require('fs').mkdirSync('dist');\n\
                    require('fs').writeFileSync('dist/index.html', v);\n";
    let (status, queued) = deploy(api, token, "secretsite", &[], source(build_js)?).await?;
    assert_eq!(status, 202, "{queued}");
    let built = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    let log = built["log"].as_str().unwrap_or_default();
    assert_eq!(built["state"], "live", "{log}");
    assert!(
        log.contains("token is *** and again ***") && log.contains("preview only: absent"),
        "{log}"
    );
    assert!(!built.to_string().contains(SECRET), "{built}");
    let (status, _, body) = visit(api, "secretsite", "/", &[]).await?;
    assert_eq!((status, body.as_slice()), (200, SECRET.as_bytes()));

    // Removed: gone from reads; removing again is a 404.
    let path = "/hosting/settings/secretsite/env/API_TOKEN";
    assert_eq!(api.send(reqwest::Method::DELETE, path, Some(token), None).await?.0, 204);
    assert_eq!(api.send(reqwest::Method::DELETE, path, Some(token), None).await?.0, 404);
    let (_, listed) = api.get("/hosting/settings/secretsite/env", Some(token)).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    Ok(())
}

#[tokio::test]
async fn a_build_log_streams_while_the_build_runs_and_resumes_where_it_stopped()
-> anyhow::Result<()> {
    let stack = stack(0).await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(8)).await?;
    let token = owner.access.as_str();
    let stream = |id: i64, last: Option<&str>| {
        let mut request =
            api.http.get(api.url(&format!("/hosting/deploy/{id}/log"))).bearer_auth(token);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        async move { SseReader::new(request.send().await?) }
    };

    // The build says one line, then works on for a few seconds before it writes the site.
    let build_js = "console.log('first line of the build');\n\
                    setTimeout(() => {\n\
                      require('fs').mkdirSync('dist');\n\
                      require('fs').writeFileSync('dist/index.html', 'streamed');\n\
                      console.log('last line of the build');\n\
                    }, 4000);\n";
    let (status, queued) = deploy(api, token, "streamed", &[], source(build_js)?).await?;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_i64().expect("id");
    let mut events = stream(id, None).await?;
    let mut seen = String::new();
    let mut first_id = None;
    while !seen.contains("first line of the build") {
        let event = events.next(Duration::from_secs(60)).await?.expect("the stream goes on");
        assert_eq!(event.event, "log", "{event:?} after {seen}");
        seen.push_str(&event.data);
        seen.push('\n');
        first_id = event.id;
    }
    // The line arrived while the build still ran.
    let (_, now) = api.get(&format!("/hosting/deploy/{id}"), Some(token)).await?;
    assert_eq!(now["state"], "building", "{now}");
    assert!(!seen.contains("last line of the build"), "{seen}");
    // Then the rest, and the end with how it ended.
    loop {
        let event =
            events.next(Duration::from_secs(60)).await?.expect("the stream ends with `end`");
        if event.event == "end" {
            let end: Value = serde_json::from_str(&event.data)?;
            assert_eq!(end, json!({"state": "live", "error": null}));
            break;
        }
        seen.push_str(&event.data);
        seen.push('\n');
    }
    assert!(events.next(Duration::from_secs(10)).await?.is_none(), "nothing after `end`");
    assert!(seen.contains("last line of the build") && seen.ends_with(" live\n"), "{seen}");

    // The stream held every line of the log, each starting with its time.
    let whole = api.deployment_finished(token, id).await?;
    let log = whole["log"].as_str().unwrap_or_default();
    assert_eq!(seen, log);
    for line in log.lines() {
        let (at, _) = line.split_once(' ').unwrap_or((line, ""));
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{line:?} starts with its time");
    }

    // Resumed after the first event: the rest only. From the start: all of it.
    let first_id = first_id.expect("log events carry their position");
    let mut resumed = stream(id, Some(&first_id)).await?;
    let rest = resumed.next(Duration::from_secs(10)).await?.expect("the rest");
    assert!(!rest.data.contains("first line of the build"), "{rest:?}");
    assert!(log.ends_with(&format!("{}\n", rest.data)), "{rest:?}");
    assert_eq!(resumed.next(Duration::from_secs(10)).await?.map(|e| e.event), Some("end".into()));
    let mut again = stream(id, None).await?;
    assert_eq!(
        again.next(Duration::from_secs(10)).await?.map(|e| e.data + "\n"),
        Some(log.to_owned())
    );

    // A failed build's stream ends with its failure; others' and bad positions are refused.
    let (_, queued) = deploy(api, token, "streamed", &[], source("process.exit(7)")?).await?;
    let failed = queued["id"].as_i64().expect("id");
    let mut events = stream(failed, None).await?;
    let end = loop {
        let event = events.next(Duration::from_secs(60)).await?.expect("an end");
        if event.event == "end" {
            break serde_json::from_str::<Value>(&event.data)?;
        }
    };
    assert_eq!(end["state"], "failed");
    assert_eq!(end["error"], "the build command (npm run build) exited with status 7");

    // A log past its bound keeps its last whole lines after a marker, read whole or streamed.
    let noisy = "for (let i = 0; i < 4000; i++) console.log(`line ${i} ` + 'x'.repeat(90));\n\
                 process.exitCode = 1;";
    let (_, queued) = deploy(api, token, "streamed", &[], source(noisy)?).await?;
    let noisy_id = queued["id"].as_i64().expect("id");
    let done = api.deployment_finished(token, noisy_id).await?;
    let log = done["log"].as_str().unwrap_or_default();
    let kept = log.strip_prefix("[earlier lines dropped]\n").expect("the marker first");
    assert!(kept.chars().count() <= 256 * 1024, "{} characters kept", kept.chars().count());
    let tail = &kept[kept.len().saturating_sub(600)..];
    assert!(
        !kept.contains(" line 0 ") && kept.contains(" line 3999 "),
        "the newest lines stay: {tail}"
    );
    for line in kept.lines() {
        let (at, _) = line.split_once(' ').unwrap_or((line, ""));
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{line:?} is whole");
    }
    assert!(kept.trim_end().ends_with("exited with status 1"), "the failure ends it");
    let mut events = stream(noisy_id, None).await?;
    let first = events.next(Duration::from_secs(10)).await?.expect("the log");
    assert_eq!(format!("{}\n", first.data), log);
    let other = stack.api.login_registered(&stack.chain.user(9)).await?;
    let path = format!("/hosting/deploy/{id}/log");
    assert_eq!(api.get(&path, Some(&other.access)).await?.0, 404);
    assert_eq!(api.get(&path, None).await?.0, 401);
    let (status, body) = api.get(&format!("{path}?after=-1"), Some(token)).await?;
    assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{body}");
    let bad =
        api.http.get(api.url(&path)).bearer_auth(token).header("last-event-id", "x").send().await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}

#[tokio::test]
async fn build_minutes_past_the_allowance_are_charged_once_and_refused_when_unpaid()
-> anyhow::Result<()> {
    let stack = Stack::builder()
        .ipfs()
        .configure(|config, _| {
            config.sites_domain = DOMAIN.into();
            config.uptime_interval_secs = 0;
            // One free minute a month, a credit a minute after it; a build runs a minute at most.
            config.build_minutes_free = 1;
            config.build_minute_credits = 1_000_000;
            config.build_time_limit_secs = 60;
        })
        .start()
        .await?;
    let api = &stack.api;
    let user = stack.chain.user(10);
    let owner = api.login_registered(&user).await?;
    let token = owner.access.as_str();
    let mut conn = stack.db.connect().await?;

    // The first build fits the month's allowance: nothing charged.
    let (status, queued) = deploy(api, token, "minutes", &[], source(BUILD_JS)?).await?;
    assert_eq!(status, 202, "{queued}");
    let first = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    let log = first["log"].as_str().unwrap_or_default();
    assert_eq!(first["state"], "live", "{log}");
    assert!(log.contains("build minutes: 1 (within this month's allowance)"), "{log}");

    // The allowance is used up and the balance is empty: the next deployment is refused up front,
    // and nothing is queued.
    let (status, refused) = deploy(api, token, "minutes", &[], source(BUILD_JS)?).await?;
    assert_eq!(
        (status, problem_type(&refused).as_str()),
        (402, "insufficient-credit"),
        "{refused}"
    );
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("1 included build minutes are used up"), "{detail}");
    let (_, history) = api.get("/hosting/deploy?site=minutes", Some(token)).await?;
    assert_eq!(history["items"].as_array().map(Vec::len), Some(1), "{history}");

    // With credit, the build runs and its minute past the allowance is charged as usage of the
    // site's service, under the deployment's reference.
    let oracle = stack.chain.provider_as(stack.chain.role(Role::PaymentOracle));
    decentraspace_abi::CreditLedger::new(stack.chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(
            user.address(),
            U256::from(5_000_000u64),
            alloy::primitives::keccak256("build-funds"),
        )
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the credit to be indexed", || async {
        Ok(api.get("/billing/balance", Some(token)).await?.1["balance"] == "5000000")
    })
    .await?;
    let (status, queued) = deploy(api, token, "minutes", &[], source(BUILD_JS)?).await?;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_i64().expect("id");
    let paid = api.deployment_finished(token, id).await?;
    let log = paid["log"].as_str().unwrap_or_default();
    assert_eq!(paid["state"], "live", "{log}");
    assert!(log.contains("build minutes: 1 (1 past this month's allowance: 1 credits)"), "{log}");
    let charges = || async {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "select credits::text, recorded_by, description from meter_charges
             where source = 'usage' and reference = $1",
        )
        .bind(format!("build:{id}"))
        .fetch_all(&mut stack.db.connect().await?)
        .await?;
        anyhow::Ok(rows)
    };
    let recorded = charges().await?;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!((recorded[0].0.as_str(), recorded[0].1.as_str()), ("1000000", "platform"));

    // A worker that dies mid-build leaves the job to another, which builds again: the minutes
    // are counted and charged once.
    sqlx::query(
        "update deployments set state = 'building', lease_until = now() - interval '1 second'
         where id = $1",
    )
    .bind(id)
    .execute(&mut conn)
    .await?;
    eventually("the retried build", || async {
        let (_, d) = api.get(&format!("/hosting/deploy/{id}"), Some(token)).await?;
        Ok(d["state"] == "live" && d["log"].as_str().unwrap_or_default().contains("attempt 2"))
    })
    .await?;
    assert_eq!(charges().await?.len(), 1, "charged once");
    let counted: i64 =
        sqlx::query_scalar("select count(*) from build_minutes where deployment_id = $1")
            .bind(id)
            .fetch_one(&mut conn)
            .await?;
    assert_eq!(counted, 1);
    Ok(())
}

#[tokio::test]
async fn redirects_and_headers_files_route_the_site_and_a_bad_line_fails_the_deployment()
-> anyhow::Result<()> {
    let stack = stack(0).await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(11)).await?;
    let token = owner.access.as_str();
    let redirects = b"# moved pages\n\
        /old   /new.html   301\n\
        /blog/:year/:slug   /posts/:year-:slug.html   200\n\
        /docs/*   /documentation/:splat   302\n\
        /shadowed   /elsewhere.html\n\
        /forced.html   /new.html   200!\n\
        /external   https://example.com/x   308\n\
        /app/*   /app/index.html   200\n\
        /gone   /gone.html   410\n";
    let headers = b"/*\n  X-Frame-Options: DENY\n/assets/*\n  Cache-Control: public, max-age=31536000, immutable\n";
    let files: &[(&str, &[u8])] = &[
        ("index.html", b"home"),
        ("new.html", b"new page"),
        ("posts/2026-hello.html", b"hello post"),
        ("shadowed/index.html", b"the real file"),
        ("elsewhere.html", b"elsewhere"),
        ("forced.html", b"never served"),
        ("app/index.html", b"the app"),
        ("gone.html", b"gone for good"),
        ("assets/app.js", b"js"),
        ("_redirects", redirects),
        ("_headers", headers),
    ];
    let (status, queued) =
        deploy(api, token, "routed", &[], tar_gz("routed-1", files, &[])?).await?;
    assert_eq!(status, 202, "{queued}");
    let live = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    let log = live["log"].as_str().unwrap_or_default();
    assert_eq!(live["state"], "live", "{log}");
    assert!(log.contains("_redirects: 8 rules, _headers: 2 path blocks"), "{log}");

    // Redirects are answered, not followed.
    api.gateway_current().await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let get = |path: &str| {
        let request =
            http.get(format!("{}{path}", api.gateway)).header("host", format!("routed.{DOMAIN}"));
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let location = headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
            anyhow::Ok((status, location, headers, response.text().await?))
        }
    };
    let (status, location, _, _) = get("/old").await?;
    assert_eq!((status, location.as_deref()), (301, Some("/new.html")));
    let (status, location, _, _) = get("/old?ref=mail").await?;
    assert_eq!(
        (status, location.as_deref()),
        (301, Some("/new.html?ref=mail")),
        "the query goes along"
    );
    let (status, location, _, _) = get("/docs/guide/intro").await?;
    assert_eq!((status, location.as_deref()), (302, Some("/documentation/guide/intro")));
    let (status, location, _, _) = get("/external").await?;
    assert_eq!((status, location.as_deref()), (308, Some("https://example.com/x")));
    // Rewrites serve the target at the asked path, with the rule's status.
    for (path, want_status, want_body) in [
        ("/blog/2026/hello", 200, "hello post"),
        ("/app/settings/profile", 200, "the app"),
        ("/gone", 410, "gone for good"),
        ("/forced.html", 200, "new page"),
        ("/shadowed", 200, "the real file"),
        ("/new.html", 200, "new page"),
    ] {
        let (status, location, _, body) = get(path).await?;
        assert_eq!((status, location, body.as_str()), (want_status, None, want_body), "{path}");
    }
    // Headers by path, over the gateway's defaults; the routing files are not pages.
    let (_, _, headers, _) = get("/").await?;
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(
        headers["cache-control"], "no-cache",
        "the gateway's default stays where none is set"
    );
    let (_, _, headers, _) = get("/assets/app.js").await?;
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(get("/_redirects").await?.0, 404);
    assert_eq!(get("/_headers").await?.0, 404);

    // A malformed line fails the deployment, naming it; the live site stays as it was.
    let bad: &[(&str, &[u8])] =
        &[("index.html", b"broken"), ("_redirects", b"/a /b\n/c /d 302 Country=au\n")];
    let (_, queued) = deploy(api, token, "routed", &[], tar_gz("routed-2", bad, &[])?).await?;
    let failed = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(failed["state"], "failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("_redirects line 2: conditions"), "{error}");
    assert_eq!(get("/").await?.3, "home");
    let bad: &[(&str, &[u8])] =
        &[("index.html", b"broken"), ("_headers", b"/\n  Content-Length: 1\n")];
    let (_, queued) = deploy(api, token, "routed", &[], tar_gz("routed-3", bad, &[])?).await?;
    let failed = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(
        failed["error"],
        "_headers line 2: Content-Length is set by the gateway and cannot be changed"
    );
    assert_eq!(get("/old").await?.0, 301, "the live deployment's rules still apply");
    Ok(())
}

/// Writes `package.json` into a temporary folder and runs `tool args…` there against `registry`:
/// the lockfile it writes.
fn lockfile(
    tool: &str,
    args: &[&str],
    registry: &str,
    lock: &str,
    package: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let folder = tempfile::tempdir()?;
    std::fs::write(folder.path().join("package.json"), package)?;
    let bin = decentraspace_tests::repo_root()
        .join("tools/package-managers/node_modules/.bin")
        .join(tool);
    let ran = std::process::Command::new(bin)
        .args(args)
        .arg("--registry")
        .arg(format!("{registry}/"))
        .current_dir(folder.path())
        .env("HOME", folder.path())
        .env("npm_config_store_dir", folder.path().join(".store"))
        .env("YARN_CACHE_FOLDER", folder.path().join(".yarn-cache"))
        .output()?;
    anyhow::ensure!(
        ran.status.success(),
        "{tool}: {}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    Ok(std::fs::read(folder.path().join(lock))?)
}

#[tokio::test]
async fn pnpm_and_yarn_lockfiles_install_with_their_own_package_manager() -> anyhow::Result<()> {
    let (registry, stack) = with_registry().await?;
    let api = &stack.api;
    let owner = stack.api.login_registered(&stack.chain.user(12)).await?;
    let token = owner.access.as_str();
    let package = br#"{"name": "fixture-site", "version": "1.0.0", "private": true,
                       "dependencies": {"greeting-fixture": "1.0.0"},
                       "scripts": {"build": "node build.js"}}"#;
    let build_js = "const fs = require('fs'), greet = require('greeting-fixture');\n\
                    fs.mkdirSync('dist');\n\
                    fs.writeFileSync('dist/index.html', greet(process.env.npm_config_user_agent.split('/')[0]));\n";
    for (site, tool, args, lock, install) in [
        (
            "pm-site",
            "pnpm",
            &["install", "--lockfile-only"][..],
            "pnpm-lock.yaml",
            "$ pnpm install --frozen-lockfile",
        ),
        (
            "pm-site",
            "yarn",
            &["install", "--ignore-scripts", "--no-progress"][..],
            "yarn.lock",
            "$ yarn install --frozen-lockfile",
        ),
    ] {
        let locked = lockfile(tool, args, &registry.url, lock, package)?;
        let source = tar_gz(
            "me-pm-1a2b3c",
            &[("package.json", package), (lock, &locked), ("build.js", build_js.as_bytes())],
            &[],
        )?;
        let (status, queued) = deploy(api, token, site, &[], source).await?;
        assert_eq!(status, 202, "{queued}");
        let built = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
        let log = built["log"].as_str().unwrap_or_default();
        assert_eq!(built["state"], "live", "{site}: {log}");
        assert!(log.contains(install), "{site}: {log}");
        let (status, _, body) = visit(api, site, "/", &[]).await?;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (200, format!("hello, {tool}").as_str()),
            "{log}"
        );
    }
    Ok(())
}

/// A stack whose user 0 has site `name` live: the stack, and the site's id.
async fn with_live_site(name: &str) -> anyhow::Result<(Stack, i64)> {
    let stack = stack(0).await?;
    let session = stack.api.login_registered(&stack.chain.user(0)).await?;
    stack.api.deploy_site(&session.access, name, "<h1>v1</h1>").await?;
    let site: i64 = sqlx::query_scalar("select id from sites where name = $1")
        .bind(name)
        .fetch_one(&mut stack.db.connect().await?)
        .await?;
    Ok((stack, site))
}

/// Inserts a deployment of `site` in the middle of attempt `attempt`, its lease a minute ahead,
/// whose worker is alive: `worker` holds its liveness lock (taken before the row is visible, as
/// the claiming statement does), until it closes.
async fn building(worker: &mut sqlx::PgConnection, site: i64, attempt: i32) -> anyhow::Result<i64> {
    let mut tx = sqlx::Connection::begin(&mut *worker).await?;
    let id: i64 = sqlx::query_scalar(
        "insert into deployments (site_id, source, state, attempts, lease_until)
         values ($1, 'upload', 'building', $2, now() + interval '1 minute') returning id",
    )
    .bind(site)
    .bind(attempt)
    .fetch_one(&mut *tx)
    .await?;
    let held: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(decentraspace_db::locks::Lock::Deployment { deployment_id: id }.key())
        .fetch_one(&mut *tx)
        .await?;
    anyhow::ensure!(held, "deployment {id}'s liveness lock is taken");
    tx.commit().await?;
    Ok(id)
}

#[tokio::test]
async fn a_deployment_whose_worker_dies_every_time_is_given_up_after_eight_attempts()
-> anyhow::Result<()> {
    let (stack, site) = with_live_site("poison").await?;
    // Its eighth worker dies too (its connection, and so its liveness lock, goes).
    let mut worker = stack.db.connect().await?;
    let id = building(&mut worker, site, 8).await?;
    sqlx::Connection::close(worker).await?;
    let mut conn = stack.db.connect().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (state, error) = loop {
        let (state, error): (String, Option<String>) =
            sqlx::query_as("select state, error from deployments where id = $1")
                .bind(id)
                .fetch_one(&mut conn)
                .await?;
        if state == "failed" {
            break (state, error);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "deployment {id} is {state}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(state, "failed");
    assert_eq!(error.as_deref(), Some("gave up after 8 attempts that did not finish"));
    Ok(())
}

#[tokio::test]
async fn a_stopping_replica_hands_its_deployments_back_at_once() -> anyhow::Result<()> {
    let (stack, site) = with_live_site("handed").await?;
    let mut conn = stack.db.connect().await?;
    // A deployment this replica's worker was building (attempt 1).
    let mut worker = stack.db.connect().await?;
    let id = building(&mut worker, site, 1).await?;
    let replica = decentraspace_api::AppState::new(stack.config.clone()).await?;
    replica.hosting.working.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert((id, 1));
    // An attempt another worker took since is not this replica's to hand back.
    let other = building(&mut worker, site, 2).await?;
    replica.hosting.working.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert((other, 1));

    assert_eq!(decentraspace_api::hosting::hand_back(&replica.hosting).await, 1);
    // Free to take now: the running worker may already have taken it (its next attempt).
    let (ours, log): (bool, String) = sqlx::query_as(
        "select lease_until <= now() or attempts = 2, log from deployments where id = $1",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await?;
    assert!(ours, "the lease still runs");
    assert!(log.contains("another takes over"), "{log}");
    let theirs: bool =
        sqlx::query_scalar("select lease_until > now() from deployments where id = $1")
            .bind(other)
            .fetch_one(&mut conn)
            .await?;
    assert!(theirs, "another attempt's lease was cut");
    assert!(replica.hosting.working.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_dead_workers_deployment_is_taken_over_before_its_lease_runs_out() -> anyhow::Result<()> {
    let (stack, site) = with_live_site("taken").await?;
    let mut conn = stack.db.connect().await?;
    // Two deployments in the middle of their first attempt, each lease a minute ahead: the
    // first one's worker is alive (this connection holds its liveness lock, as a working
    // replica's worker does); the second one's worker died with its replica.
    let mut worker = stack.db.connect().await?;
    let alive = building(&mut worker, site, 1).await?;
    let mut dead_worker = stack.db.connect().await?;
    let dead = building(&mut dead_worker, site, 1).await?;
    drop(dead_worker);

    // The running API's worker takes the dead one over at once. Jobs are claimed in id order,
    // so the query that claimed it found the living one's lock held and passed it by.
    let attempts = |id: i64| {
        sqlx::query_scalar::<_, i32>("select attempts from deployments where id = $1").bind(id)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while attempts(dead).fetch_one(&mut conn).await? < 2 {
        anyhow::ensure!(Instant::now() < deadline, "the dead worker's deployment was not taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts(alive).fetch_one(&mut conn).await?, 1, "a living worker's job was taken");
    // The worker logs its new attempt after the claim that counted it has committed.
    let log = |id: i64| {
        sqlx::query_scalar::<_, String>("select log from deployments where id = $1").bind(id)
    };
    loop {
        let text = log(dead).fetch_one(&mut conn).await?;
        if text.contains("attempt 2: starting over") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no new attempt in the log: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Once that worker dies too, its job goes the same way.
    drop(worker);
    let deadline = Instant::now() + Duration::from_secs(20);
    while attempts(alive).fetch_one(&mut conn).await? < 2 {
        anyhow::ensure!(Instant::now() < deadline, "the second deployment was not taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_first_deployment_cut_off_while_its_service_opens_opens_one_service() -> anyhow::Result<()>
{
    let stack = stack(0).await?;
    let user = stack.chain.user(0);
    let session = stack.api.login_registered(&user).await?;
    let reader = stack.chain.reader();
    let automine = |on: bool| {
        let reader = reader.clone();
        async move { reader.raw_request::<_, Value>("evm_setAutomine".into(), (on,)).await.map(drop) }
    };
    let archive = tar_gz("site", &[("index.html", V1_INDEX)], &[])?;
    let mut db = stack.db.connect().await?;
    let writes = format!("hosting-service:{}:cutoff:", user.address());
    let count_writes = "select count(*) from chain_outbox where starts_with(reference, $1)";

    // Nothing is mined: the first request's service transaction stays on the network, and its
    // replica dies while the request waits for it.
    automine(false).await?;
    let replica = TestApi::start_with(stack.config.clone()).await?;
    {
        let first = deploy(&replica, &session.access, "cutoff", &[], archive.clone());
        tokio::pin!(first);
        let written = eventually("the first request's service write", || async {
            let n: i64 = sqlx::query_scalar(count_writes)
                .bind(&writes)
                .fetch_one(&mut stack.db.connect().await?)
                .await?;
            Ok(n == 1)
        });
        tokio::select! {
            answer = &mut first => anyhow::bail!("answered before its service was mined: {answer:?}"),
            written = written => written?,
        }
    }
    drop(replica);

    // Sent again to the other replica while that transaction is still unmined, then mined.
    let again = deploy(&stack.api, &session.access, "cutoff", &[], archive);
    let mine = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        automine(true).await?;
        reader.raw_request::<_, Value>("evm_mine".into(), ()).await?;
        anyhow::Ok(())
    };
    let ((status, body), ()) = tokio::try_join!(again, mine)?;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("a deployment id");
    assert_eq!(stack.api.deployment_finished(&session.access, id).await?["state"], "live");

    // One write, one service: the retry waited for the first attempt's transaction.
    let n: i64 = sqlx::query_scalar(count_writes).bind(&writes).fetch_one(&mut db).await?;
    assert_eq!(n, 1, "service writes for the site");
    let registry = ServiceRegistry::new(stack.chain.deployment.contracts.service_registry, &reader);
    let open = registry
        .openServices(user.address(), decentraspace_abi::ServiceKind::StaticHosting.into())
        .call()
        .await?;
    assert_eq!(open, 1, "hosting services opened for the account");
    Ok(())
}
