//! GitHub continuous deployment end to end, against a local server speaking GitHub's OAuth and
//! REST API (tarballs made in the test, webhooks signed as GitHub signs them), a real IPFS node,
//! anvil, Postgres, the indexer and the API: link an account, deploy a repository, push to deploy
//! again, a redelivered push deploys once, a push deploys exactly its commit and an older one
//! never replaces a newer, bad signatures are refused, tokens are sealed at rest,
//! another account touches nothing, and unlinking stops deploys; linking creates the site's own
//! webhook (unlinking removes it), pull requests build previews beside production (a fork's
//! without secrets) and closing one removes its preview, and every build is reported to GitHub as
//! a commit status.

use std::io::Write;

use alloy::primitives::{U256, keccak256};
use decentraspace_abi::CreditLedger;
use decentraspace_tests::{
    FakeGitHub, GITHUB_CLIENT_ID, GITHUB_WEBHOOK_SECRET, Role, Session, Stack, TestApi, eventually,
    github_signature, problem_type, pull_request_payload, push_payload, role_key,
};
use serde_json::{Value, json};

const DOMAIN: &str = "sites.test";

/// The stack, with IPFS, and GitHub's API served by a local fake.
struct WithGitHub {
    stack: Stack,
    github: FakeGitHub,
}

impl std::ops::Deref for WithGitHub {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.stack
    }
}

async fn stack() -> anyhow::Result<WithGitHub> {
    stack_with(Some(GITHUB_WEBHOOK_SECRET)).await
}

/// The stack, with or without a platform-wide webhook secret.
async fn stack_with(platform_secret: Option<&'static str>) -> anyhow::Result<WithGitHub> {
    let github = FakeGitHub::start().await?;
    let pointed = github.configurer();
    let stack = Stack::builder()
        .ipfs()
        .configure(move |config, chain| {
            config.sites_domain = DOMAIN.into();
            config.uptime_interval_secs = 0;
            pointed(config);
            config.github_webhook_secret = platform_secret.map(Into::into);
            // Links past the tier's included ones are charged with the billing key.
            config.billing_key = Some(role_key(chain, Role::Billing).into());
            config.github_extra_link_credits = 5_000_000;
        })
        .start()
        .await?;
    Ok(WithGitHub { stack, github })
}

/// A tarball as GitHub makes them: everything under `<owner>-<repo>-<sha7>/`.
fn tarball(sha: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("octocat-blog-{}/{name}", &sha[..7]), *data)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner()?)?;
    Ok(gz.finish()?)
}

/// Links the GitHub user `login` to `session`'s account through the OAuth flow; the link.
async fn link(
    stack: &WithGitHub,
    session: &Session,
    id: i64,
    login: &str,
) -> anyhow::Result<(u16, Value)> {
    let (status, start) = stack.api.post("/github/link", Some(&session.access), &json!({})).await?;
    anyhow::ensure!(status == 200, "{status}: {start}");
    let code = stack.github.authorize(id, login);
    stack
        .api
        .post(
            "/github/link/callback",
            Some(&session.access),
            &json!({"code": code, "state": start["state"]}),
        )
        .await
}

async fn deliver(
    api: &TestApi,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = api
        .http
        .post(api.url("/github/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

async fn served(api: &TestApi, site: &str) -> anyhow::Result<(u16, String)> {
    api.gateway_current().await?;
    let response = api
        .http
        .get(format!("{}/", api.gateway))
        .header("host", format!("{site}.{DOMAIN}"))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

const SHA1: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA2: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA3: &str = "3333333ccccccccccccccccccccccccccccccccc";
const SHA4: &str = "4444444ddddddddddddddddddddddddddddddddd";
const SHA5: &str = "5555555eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

#[tokio::test]
async fn a_linked_repository_deploys_and_a_push_deploys_it_again_once() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (api, github) = (&stack.api, &stack.github);
    let owner = stack.api.login_registered(&stack.chain.user(0)).await?;
    let token = owner.access.as_str();
    github.repository("octocat/blog", "main", &["octocat"]);
    // The linked user cannot make webhooks on it: its deliveries come from a webhook set up by
    // hand with the platform-wide secret.
    github.refuse_hooks("octocat/blog");
    github.push("octocat/blog", "main", SHA1, tarball(SHA1, &[("index.html", b"<h1>gh v1</h1>")])?);

    // The link flow: the authorize URL names the app and carries a state only this account can use.
    let (status, start) = api.post("/github/link", Some(token), &json!({})).await?;
    assert_eq!(status, 200, "{start}");
    let url = start["authorize_url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&format!(
            "{}/login/oauth/authorize?client_id={GITHUB_CLIENT_ID}",
            github.url
        )),
        "{url}"
    );
    let other = stack.api.login_registered(&stack.chain.user(1)).await?;
    let code = github.authorize(101, "octocat");
    let (status, body) = api
        .post(
            "/github/link/callback",
            Some(&other.access),
            &json!({"code": code, "state": start["state"]}),
        )
        .await?;
    assert_eq!(
        (status, problem_type(&body).as_str()),
        (400, "bad-request"),
        "another account's state: {body}"
    );
    let (status, body) = api
        .post(
            "/github/link/callback",
            Some(token),
            &json!({"code": "not-a-code", "state": start["state"]}),
        )
        .await?;
    assert_eq!((status, problem_type(&body).as_str()), (422, "github-refused"), "{body}");
    let (status, linked) = api
        .post("/github/link/callback", Some(token), &json!({"code": code, "state": start["state"]}))
        .await?;
    assert_eq!(status, 201, "{linked}");
    assert_eq!((&linked["login"], &linked["github_id"]), (&json!("octocat"), &json!(101)));
    let link_id = linked["id"].as_i64().expect("id");

    // The token is sealed at rest; a Free account links one GitHub account.
    let mut conn = stack.db.connect().await?;
    let sealed: Vec<u8> =
        sqlx::query_scalar("select token_sealed from github_accounts where id = $1")
            .bind(link_id)
            .fetch_one(&mut conn)
            .await?;
    assert!(!sealed.windows(4).any(|w| w == b"gho_"), "no token in clear");
    assert_eq!(linked["charged_credits"], Value::Null, "the tier includes the first link");
    // A second link costs 5 credits, which the account lacks.
    let (status, body) = api.post("/github/link", Some(token), &json!({})).await?;
    assert_eq!((status, problem_type(&body).as_str()), (402, "insufficient-credit"), "{body}");
    let (status, repos) =
        api.get(&format!("/github/link/{link_id}/repositories"), Some(token)).await?;
    assert_eq!(status, 200);
    assert_eq!(repos[0]["full_name"], "octocat/blog");

    // Deploy the repository's default branch.
    let request =
        json!({"site": "gh-blog", "github_account_id": link_id, "repository": "octocat/blog"});
    let (status, queued) = api.post("/github/deploy", Some(token), &request).await?;
    assert_eq!(status, 202, "{queued}");
    assert_eq!((&queued["commit"], &queued["source"]), (&json!(SHA1), &json!("github")));
    let live = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(live["state"], "live", "{live}");
    assert_eq!(served(api, "gh-blog").await?, (200, "<h1>gh v1</h1>".into()));
    let log = live["log"].as_str().unwrap_or_default();
    assert!(
        log.contains("no webhook on octocat/blog, so pushes and pull requests will not deploy"),
        "{log}"
    );

    // Another account can neither use the link nor unlink it.
    let theirs =
        json!({"site": "theirs", "github_account_id": link_id, "repository": "octocat/blog"});
    let (status, _) = api.post("/github/deploy", Some(&other.access), &theirs).await?;
    assert_eq!(status, 404);
    let (status, _) =
        api.post("/github/unlink", Some(&other.access), &json!({"id": link_id})).await?;
    assert_eq!(status, 404);
    let (status, _) =
        api.get(&format!("/github/link/{link_id}/repositories"), Some(&other.access)).await?;
    assert_eq!(status, 404);

    // A push to main: signed deliveries deploy it, once however often it is delivered.
    github.push("octocat/blog", "main", SHA2, tarball(SHA2, &[("index.html", b"<h1>gh v2</h1>")])?);
    let body = push_payload("octocat/blog", "main", SHA2);
    let (status, _) = deliver(api, "push", "d-1", &body, None).await?;
    assert_eq!(status, 401, "unsigned");
    let (status, refused) =
        deliver(api, "push", "d-1", &body, Some(&github_signature(&body, "wrong"))).await?;
    assert_eq!((status, problem_type(&refused).as_str()), (401, "invalid-signature"));
    let signature = github_signature(&body, GITHUB_WEBHOOK_SECRET);
    let (status, first) = deliver(api, "push", "d-1", &body, Some(&signature)).await?;
    assert_eq!(
        (status, &first["deployments"], &first["duplicate"]),
        (200, &json!(1), &json!(false)),
        "{first}"
    );
    let (status, again) = deliver(api, "push", "d-1", &body, Some(&signature)).await?;
    assert_eq!(
        (status, &again["deployments"], &again["duplicate"]),
        (200, &json!(0), &json!(true)),
        "{again}"
    );
    let (_, history) = api.get("/hosting/deploy?site=gh-blog", Some(token)).await?;
    let items = history["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "one deployment per push: {history}");
    assert_eq!(items[0]["commit"], SHA2);
    api.deployment_finished(token, items[0]["id"].as_i64().expect("id")).await?;
    assert_eq!(served(api, "gh-blog").await?, (200, "<h1>gh v2</h1>".into()));
    // A push deploys exactly the commit it names, even when the branch has moved on since: SHA4
    // and then SHA5 are pushed, and SHA4's delivery arrives first.
    github.push("octocat/blog", "main", SHA4, tarball(SHA4, &[("index.html", b"<h1>gh v4</h1>")])?);
    github.push("octocat/blog", "main", SHA5, tarball(SHA5, &[("index.html", b"<h1>gh v5</h1>")])?);
    for (delivery, sha, page) in [("d-6", SHA4, "<h1>gh v4</h1>"), ("d-7", SHA5, "<h1>gh v5</h1>")]
    {
        let body = push_payload("octocat/blog", "main", sha);
        let signature = github_signature(&body, GITHUB_WEBHOOK_SECRET);
        let (_, outcome) = deliver(api, "push", delivery, &body, Some(&signature)).await?;
        assert_eq!(outcome["deployments"], 1, "{outcome}");
        let (_, history) = api.get("/hosting/deploy?site=gh-blog&limit=1", Some(token)).await?;
        let done =
            api.deployment_finished(token, history["items"][0]["id"].as_i64().expect("id")).await?;
        assert_eq!(
            (&done["state"], &done["commit"], &done["current"]),
            (&json!("live"), &json!(sha), &json!(true)),
            "{done}"
        );
        assert_eq!(served(api, "gh-blog").await?, (200, page.into()));
    }
    // A delivery of an older commit (late, or replayed under a new delivery id) builds exactly
    // that commit, which stays in the history without replacing the newer live one.
    let stale = push_payload("octocat/blog", "main", SHA1);
    let (_, outcome) =
        deliver(api, "push", "d-5", &stale, Some(&github_signature(&stale, GITHUB_WEBHOOK_SECRET)))
            .await?;
    assert_eq!(outcome["deployments"], 1, "{outcome}");
    let (_, history) = api.get("/hosting/deploy?site=gh-blog&limit=1", Some(token)).await?;
    let old =
        api.deployment_finished(token, history["items"][0]["id"].as_i64().expect("id")).await?;
    assert_eq!(
        (&old["state"], &old["commit"], &old["current"]),
        (&json!("live"), &json!(SHA1), &json!(false)),
        "{old}"
    );
    let log = old["log"].as_str().unwrap_or_default();
    assert!(
        log.contains(&format!("not made current: {SHA1} is older than the live commit {SHA5}")),
        "{log}"
    );
    assert_eq!(served(api, "gh-blog").await?, (200, "<h1>gh v5</h1>".into()));
    // A push whose `after` is not a commit SHA is refused.
    let bad = push_payload("octocat/blog", "main", "main");
    let (status, refused) =
        deliver(api, "push", "d-8", &bad, Some(&github_signature(&bad, GITHUB_WEBHOOK_SECRET)))
            .await?;
    assert_eq!((status, problem_type(&refused).as_str()), (400, "bad-request"), "{refused}");
    // A push to another branch deploys nothing; a ping is answered.
    let other_branch = push_payload("octocat/blog", "feature", SHA3);
    let (_, outcome) = deliver(
        api,
        "push",
        "d-2",
        &other_branch,
        Some(&github_signature(&other_branch, GITHUB_WEBHOOK_SECRET)),
    )
    .await?;
    assert_eq!(outcome["deployments"], 0);
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (status, _) =
        deliver(api, "ping", "d-3", ping, Some(&github_signature(ping, GITHUB_WEBHOOK_SECRET)))
            .await?;
    assert_eq!(status, 200);
    assert_eq!(github.downloads(), 5, "one tarball per deployment");

    // Unlinked: the token is gone and pushes no longer deploy.
    let (status, _) = api.post("/github/unlink", Some(token), &json!({"id": link_id})).await?;
    assert_eq!(status, 204);
    let (_, links) = api.get("/github/link", Some(token)).await?;
    assert_eq!(links, json!([]));
    github.push("octocat/blog", "main", SHA3, tarball(SHA3, &[("index.html", b"<h1>gh v3</h1>")])?);
    let body = push_payload("octocat/blog", "main", SHA3);
    let (_, outcome) =
        deliver(api, "push", "d-4", &body, Some(&github_signature(&body, GITHUB_WEBHOOK_SECRET)))
            .await?;
    assert_eq!(outcome["deployments"], 0, "{outcome}");
    assert_eq!(served(api, "gh-blog").await?, (200, "<h1>gh v5</h1>".into()));
    let sealed: Vec<u8> =
        sqlx::query_scalar("select token_sealed from github_accounts where id = $1")
            .bind(link_id)
            .fetch_one(&mut conn)
            .await?;
    assert!(sealed.is_empty(), "an unlinked account's token is forgotten");
    Ok(())
}

#[tokio::test]
async fn a_github_identity_moves_to_the_account_that_links_it_last() -> anyhow::Result<()> {
    let stack = stack().await?;
    let api = &stack.api;
    let (first, second) = (
        stack.api.login_registered(&stack.chain.user(2)).await?,
        stack.api.login_registered(&stack.chain.user(3)).await?,
    );
    let (status, linked) = link(&stack, &first, 202, "hubot").await?;
    assert_eq!(status, 201, "{linked}");
    let (status, moved) = link(&stack, &second, 202, "hubot").await?;
    assert_eq!(status, 201, "{moved}");
    assert_ne!(moved["id"], linked["id"]);
    assert_eq!(api.get("/github/link", Some(&first.access)).await?.1, json!([]));
    let (_, links) = api.get("/github/link", Some(&second.access)).await?;
    assert_eq!(links.as_array().map(Vec::len), Some(1));
    assert_eq!(links[0]["login"], "hubot");
    // The revoked token is reported as such.
    stack.github.repository("hubot/site", "main", &["hubot"]);
    stack.github.revoke("hubot");
    let (status, body) = api
        .get(&format!("/github/link/{}/repositories", moved["id"]), Some(&second.access))
        .await?;
    assert_eq!((status, problem_type(&body).as_str()), (409, "conflict"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_link_past_the_included_one_is_charged_on_chain_once() -> anyhow::Result<()> {
    let stack = stack().await?;
    let api = &stack.api;
    let user = stack.chain.user(4);
    let session = api.login_registered(&user).await?;
    let c = stack.chain.deployment.contracts;
    let oracle = stack.chain.provider_as(stack.chain.role(Role::PaymentOracle));
    CreditLedger::new(c.credit_ledger, &oracle)
        .creditFiat(user.address(), U256::from(7_000_000u64), keccak256("github-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the credit to be indexed", || async {
        Ok(api.get("/billing/balance", Some(&session.access)).await?.1["balance"] == "7000000")
    })
    .await?;

    // The Free tier's one link is included; the next costs 5 credits, said up front.
    let (status, first) = link(&stack, &session, 301, "first-gh").await?;
    assert_eq!((status, &first["charged_credits"]), (201, &Value::Null), "{first}");
    let (status, start) = api.post("/github/link", Some(&session.access), &json!({})).await?;
    assert_eq!((status, start["cost_credits"].as_u64()), (200, Some(5_000_000)), "{start}");
    let code = stack.github.authorize(302, "second-gh");
    let callback = json!({"code": code, "state": start["state"]});
    let (status, second) =
        api.post("/github/link/callback", Some(&session.access), &callback).await?;
    assert_eq!((status, second["charged_credits"].as_i64()), (201, Some(5_000_000)), "{second}");
    let ledger = CreditLedger::new(c.credit_ledger, stack.chain.reader());
    assert_eq!(ledger.balanceOf(user.address()).call().await?, U256::from(2_000_000u64));

    // Linking the same identity again (a fresh token) is no new link: nothing more is charged.
    let again = json!({"code": stack.github.authorize(302, "second-gh"), "state": start["state"]});
    let (status, relinked) =
        api.post("/github/link/callback", Some(&session.access), &again).await?;
    assert_eq!(status, 201, "{relinked}");
    assert_eq!(ledger.balanceOf(user.address()).call().await?, U256::from(2_000_000u64));

    // 2 credits left (as indexed): a third link is refused before GitHub is asked.
    eventually("the charge to be indexed", || async {
        Ok(api.get("/billing/balance", Some(&session.access)).await?.1["balance"] == "2000000")
    })
    .await?;
    let (status, body) = api.post("/github/link", Some(&session.access), &json!({})).await?;
    assert_eq!((status, problem_type(&body).as_str()), (402, "insufficient-credit"), "{body}");
    let (_, links) = api.get("/github/link", Some(&session.access)).await?;
    assert_eq!(links.as_array().map(Vec::len), Some(2), "{links}");
    Ok(())
}

/// A source whose build writes what it sees of two variables into the page.
fn source_seeing_env(sha: &str, title: &str) -> anyhow::Result<Vec<u8>> {
    let package = br#"{"name": "blog", "version": "1.0.0", "private": true,
                       "scripts": {"build": "node build.js"}}"#;
    let build_js = format!(
        "const fs = require('fs');\n\
         fs.mkdirSync('dist');\n\
         const seen = [process.env.PREVIEW_TOKEN, process.env.DEPLOY_TOKEN].map(v => v || 'none');\n\
         fs.writeFileSync('dist/index.html', '{title}|' + seen.join('|'));\n"
    );
    tarball(sha, &[("package.json", package), ("build.js", build_js.as_bytes())])
}

/// `GET /` of `host` (a site or a preview) on the gateway: status, `X-Robots-Tag` and body.
async fn visit(api: &TestApi, host: &str) -> anyhow::Result<(u16, Option<String>, String)> {
    api.gateway_current().await?;
    let response = api
        .http
        .get(format!("{}/", api.gateway))
        .header("host", format!("{host}.{DOMAIN}"))
        .send()
        .await?;
    let robots =
        response.headers().get("x-robots-tag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((response.status().as_u16(), robots, response.text().await?))
}

/// The states and contexts of the statuses set on `sha`, in order.
fn statuses(github: &FakeGitHub, sha: &str) -> Vec<(String, String)> {
    github
        .statuses("octocat/blog", sha)
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or_default().to_owned(),
                s["context"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn pull_requests_get_previews_and_github_hears_of_every_build() -> anyhow::Result<()> {
    // No platform-wide secret: only the site's own webhook's deliveries are accepted.
    let stack = stack_with(None).await?;
    let (api, github) = (&stack.api, &stack.github);
    let owner = stack.api.login_registered(&stack.chain.user(2)).await?;
    let token = owner.access.as_str();
    github.repository("octocat/blog", "main", &["octocat"]);
    // More repositories than one page of GitHub's listing holds.
    for n in 0..150 {
        github.repository(&format!("octocat/extra-{n:03}"), "main", &["octocat"]);
    }
    github.push("octocat/blog", "main", SHA1, source_seeing_env(SHA1, "production")?);
    let (status, linked) = link(&stack, &owner, 202, "octocat").await?;
    assert_eq!(status, 201, "{linked}");
    let link_id = linked["id"].as_i64().expect("id");
    let (status, repos) =
        api.get(&format!("/github/link/{link_id}/repositories"), Some(token)).await?;
    assert_eq!((status, repos.as_array().map(Vec::len)), (200, Some(151)), "every page is read");

    let request =
        json!({"site": "blog", "github_account_id": link_id, "repository": "octocat/blog"});
    let (status, queued) = api.post("/github/deploy", Some(token), &request).await?;
    assert_eq!(status, 202, "{queued}");
    let first = api.deployment_finished(token, queued["id"].as_i64().expect("id")).await?;
    assert_eq!(first["state"], "live", "{first}");

    // Linking made the site's webhook on the repository, delivering here, with a secret that is
    // sealed at rest.
    let hooks = github.hooks("octocat/blog");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(hook.url, api.url("/github/webhook"));
    assert_eq!(hook.events, ["push", "pull_request"]);
    assert_eq!(hook.secret.len(), 64, "a fresh random secret");
    let mut conn = stack.db.connect().await?;
    let sealed: Vec<u8> =
        sqlx::query_scalar("select hook_secret_sealed from sites where name = 'blog'")
            .fetch_one(&mut conn)
            .await?;
    assert!(!sealed.windows(16).any(|w| w == &hook.secret.as_bytes()[..16]), "no secret in clear");
    // GitHub heard of the build: pending, then success with the site's address.
    eventually("the first build's statuses", || async {
        Ok(github.statuses("octocat/blog", SHA1).len() == 2)
    })
    .await?;
    let done = github.statuses("octocat/blog", SHA1);
    assert_eq!(
        statuses(github, SHA1),
        [
            ("pending".into(), "decentraspace/blog".into()),
            ("success".into(), "decentraspace/blog".into())
        ]
    );
    assert_eq!(done[1]["target_url"], "https://blog.decentraspace.site");

    let env = |name: &str, value: &str, scope: &str| {
        let path = format!("/hosting/settings/blog/env/{name}");
        let body = json!({"value": value, "scope": scope});
        async move { api.send(reqwest::Method::PUT, &path, Some(token), Some(&body)).await }
    };
    assert_eq!(env("DEPLOY_TOKEN", "prod-secret", "production").await?.0, 200);
    assert_eq!(env("PREVIEW_TOKEN", "preview-secret", "preview").await?.0, 200);

    // A pull request: its head is built into the preview pr-7 with the preview's variables;
    // production is untouched.
    github.commit("octocat/blog", SHA2, source_seeing_env(SHA2, "pr7")?);
    let opened = pull_request_payload("octocat/blog", "opened", 7, SHA2, "octocat/blog");
    let answers = github.deliver("octocat/blog", "pull_request", &opened).await?;
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].status, &answers[0].body["deployments"]),
        (200, &json!(1)),
        "{:?}",
        answers[0]
    );
    let preview_live = |host: &'static str, page: &'static str| async move {
        eventually(&format!("{host} serving {page}"), || async move {
            Ok(visit(api, host).await?.2 == page)
        })
        .await
    };
    preview_live("pr-7--blog", "pr7|preview-secret|none").await?;
    let (status, robots, _) = visit(api, "pr-7--blog").await?;
    assert_eq!((status, robots.as_deref()), (200, Some("noindex")));
    assert_eq!(visit(api, "blog").await?, (200, None, "production|none|none".into()));
    let (status, previews) = api.get("/hosting/previews/blog", Some(token)).await?;
    assert_eq!(status, 200, "{previews}");
    assert_eq!(previews.as_array().map(Vec::len), Some(1), "{previews}");
    assert_eq!(
        (
            &previews[0]["label"],
            &previews[0]["pull_request"],
            &previews[0]["commit"],
            &previews[0]["from_fork"]
        ),
        (&json!("pr-7"), &json!(7), &json!(SHA2), &json!(false))
    );
    assert_eq!(previews[0]["url"], "https://pr-7--blog.decentraspace.site");
    eventually("the preview's statuses", || async {
        Ok(github.statuses("octocat/blog", SHA2).len() == 2)
    })
    .await?;
    assert_eq!(
        statuses(github, SHA2),
        [
            ("pending".into(), "decentraspace/blog/pr-7".into()),
            ("success".into(), "decentraspace/blog/pr-7".into())
        ]
    );
    assert_eq!(
        github.statuses("octocat/blog", SHA2)[1]["target_url"],
        "https://pr-7--blog.decentraspace.site"
    );

    // Pushed to: the preview follows its head.
    github.commit("octocat/blog", SHA3, source_seeing_env(SHA3, "pr7-v2")?);
    let synced = pull_request_payload("octocat/blog", "synchronize", 7, SHA3, "octocat/blog");
    assert_eq!(github.deliver("octocat/blog", "pull_request", &synced).await?[0].status, 200);
    preview_live("pr-7--blog", "pr7-v2|preview-secret|none").await?;
    // A delivery of an earlier change, arriving late, moves nothing back.
    let mut stale: Value = serde_json::from_slice(&opened)?;
    stale["action"] = json!("synchronize");
    stale["pull_request"]["updated_at"] = json!("2020-01-01T00:00:00Z");
    let answers =
        github.deliver("octocat/blog", "pull_request", &serde_json::to_vec(&stale)?).await?;
    assert_eq!(answers[0].body["deployments"], 0, "{:?}", answers[0]);

    // A preview's build never becomes production.
    let preview_build = previews[0]["deployment_id"].as_i64().expect("a live preview build");
    let (status, body) = api
        .post(&format!("/hosting/deploy/{preview_build}/rollback"), Some(token), &json!({}))
        .await?;
    assert_eq!((status, problem_type(&body).as_str()), (409, "conflict"), "{body}");

    // A fork's pull request builds only once the site allows it, and then with no variables
    // and no build cache; a failed build says so on its commit, and why only in its log.
    github.commit("octocat/blog", SHA4, source_seeing_env(SHA4, "fork")?);
    let forked = pull_request_payload("octocat/blog", "opened", 8, SHA4, "mallory/blog");
    let answers = github.deliver("octocat/blog", "pull_request", &forked).await?;
    assert_eq!(
        (answers[0].status, &answers[0].body["deployments"]),
        (200, &json!(0)),
        "{:?}",
        answers[0]
    );
    let settings = json!({"fork_previews": true});
    let (status, saved) = api
        .send(reqwest::Method::PUT, "/hosting/settings/blog", Some(token), Some(&settings))
        .await?;
    assert_eq!((status, &saved["fork_previews"]), (200, &json!(true)), "{saved}");
    let reopened = pull_request_payload("octocat/blog", "reopened", 8, SHA4, "mallory/blog");
    let answers = github.deliver("octocat/blog", "pull_request", &reopened).await?;
    assert_eq!(answers[0].body["deployments"], 1, "{:?}", answers[0]);
    preview_live("pr-8--blog", "fork|none|none").await?;
    let (_, history) = api.get("/hosting/deploy?site=blog&limit=1", Some(token)).await?;
    let fork_log = history["items"][0]["log"].as_str().unwrap_or_default();
    assert!(
        fork_log.contains("a pull request from a fork: built without variables or secrets")
            && fork_log.contains("build cache: none (an untrusted source)"),
        "{fork_log}"
    );
    let failing = tarball(
        SHA5,
        &[("package.json", br#"{"scripts": {"build": "node -e \"process.exit(4)\""}}"#)],
    )?;
    github.commit("octocat/blog", SHA5, failing);
    let broken = pull_request_payload("octocat/blog", "synchronize", 8, SHA5, "mallory/blog");
    assert_eq!(github.deliver("octocat/blog", "pull_request", &broken).await?[0].status, 200);
    eventually("the failed build's status", || async {
        Ok(github.statuses("octocat/blog", SHA5).iter().any(|s| s["state"] == "failure"))
    })
    .await?;
    let failure = github.statuses("octocat/blog", SHA5).pop().expect("a status");
    assert_eq!(failure["description"], "The deployment failed: its log says why");
    assert!(
        failure["target_url"].as_str().is_some_and(|u| u.starts_with(&api.url("/hosting/deploy/"))),
        "{failure}"
    );
    assert_eq!(
        visit(api, "pr-8--blog").await?.2,
        "fork|none|none",
        "a failed build leaves the preview as it was"
    );

    // Deliveries are checked against the site's own secret: another secret, or a webhook this
    // platform did not make, is refused.
    let forged = pull_request_payload("octocat/blog", "closed", 7, SHA3, "octocat/blog");
    for (hook_id, secret) in
        [(hook.id.to_string(), GITHUB_WEBHOOK_SECRET), ("999999".into(), hook.secret.as_str())]
    {
        let response = api
            .http
            .post(api.url("/github/webhook"))
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "forged-1")
            .header("x-github-hook-id", hook_id)
            .header("x-hub-signature-256", github_signature(&forged, secret))
            .body(forged.clone())
            .send()
            .await?;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(visit(api, "pr-7--blog").await?.0, 200, "the forged close closed nothing");

    // Closed: the preview is gone, production and the other preview stay.
    let closed = pull_request_payload("octocat/blog", "closed", 7, SHA3, "octocat/blog");
    let answers = github.deliver("octocat/blog", "pull_request", &closed).await?;
    assert_eq!(answers[0].body["previews_closed"], 1, "{:?}", answers[0]);
    assert_eq!(visit(api, "pr-7--blog").await?.0, 404);
    let answers =
        github.deliver("octocat/blog", "pull_request", &serde_json::to_vec(&stale)?).await?;
    assert_eq!(answers[0].body["deployments"], 0, "a late event does not open it again");
    assert_eq!(visit(api, "pr-7--blog").await?.0, 404);
    assert_eq!(visit(api, "blog").await?.2, "production|none|none");
    let (_, previews) = api.get("/hosting/previews/blog", Some(token)).await?;
    let labels: Vec<&str> =
        previews.as_array().expect("previews").iter().filter_map(|p| p["label"].as_str()).collect();
    assert_eq!(labels, ["pr-8"]);
    let other = stack.api.login_registered(&stack.chain.user(3)).await?;
    assert_eq!(api.get("/hosting/previews/blog", Some(&other.access)).await?.0, 404);

    // Branch previews, once the site enables them: a push to another branch builds it apart,
    // deleting the branch closes it.
    const SHA6: &str = "6666666fffffffffffffffffffffffffffffffff";
    github.push("octocat/blog", "feature/x", SHA6, source_seeing_env(SHA6, "branch")?);
    let pushed = push_payload("octocat/blog", "feature/x", SHA6);
    let answers = github.deliver("octocat/blog", "push", &pushed).await?;
    assert_eq!(answers[0].body["deployments"], 0, "branch previews are off: {:?}", answers[0]);
    let settings = json!({"branch_previews": true});
    let (status, saved) = api
        .send(reqwest::Method::PUT, "/hosting/settings/blog", Some(token), Some(&settings))
        .await?;
    assert_eq!((status, &saved["branch_previews"]), (200, &json!(true)), "{saved}");
    let answers = github.deliver("octocat/blog", "push", &pushed).await?;
    assert_eq!(answers[0].body["deployments"], 1, "{:?}", answers[0]);
    preview_live("feature-x--blog", "branch|preview-secret|none").await?;
    assert_eq!(visit(api, "blog").await?.2, "production|none|none");
    let mut deleted: Value = serde_json::from_slice(&pushed)?;
    deleted["deleted"] = json!(true);
    deleted["after"] = json!("0000000000000000000000000000000000000000");
    let answers = github.deliver("octocat/blog", "push", &serde_json::to_vec(&deleted)?).await?;
    assert_eq!(answers[0].body["previews_closed"], 1, "{:?}", answers[0]);
    assert_eq!(visit(api, "feature-x--blog").await?.0, 404);

    // Unlinking the account removes the webhook from the repository.
    let (status, _) = api.post("/github/unlink", Some(token), &json!({"id": link_id})).await?;
    assert_eq!(status, 204);
    assert!(github.hooks("octocat/blog").is_empty());
    Ok(())
}
