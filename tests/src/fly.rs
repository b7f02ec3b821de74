//! A local server speaking the Fly Machines REST API (`/v1/apps/{app}/machines…`, bearer
//! tokens, `{"error": …}` answers) for the machines of one app, and small HTTP servers standing in
//! for the containers: a machine "runs" at 127.0.0.1 on the port its deployment names. An image
//! whose name holds `broken` never starts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::served::{Served, bearer};

/// The Fly app the fake serves.
pub const FLY_APP: &str = "decentraspace-sites";
/// The token it takes.
pub const FLY_TOKEN: &str = "fly-test-token";

#[derive(Debug, Clone)]
struct FakeMachine {
    id: String,
    name: String,
    state: String,
    image: String,
    metadata: HashMap<String, String>,
}

impl FakeMachine {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": "jnb",
            "private_ip": "127.0.0.1",
            "config": { "image": self.image, "metadata": self.metadata },
        })
    }
}

type Machines = Arc<Mutex<Vec<FakeMachine>>>;

/// The fake Machines API; stops when dropped.
pub struct FakeFly {
    /// Its base URL.
    pub url: String,
    machines: Machines,
    _server: Served,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refusal: its status and message.
type Refusal = (StatusCode, &'static str);

fn authorized(headers: &HeaderMap, app: &str) -> Result<(), Refusal> {
    if bearer(headers) != Some(FLY_TOKEN) {
        return Err((StatusCode::UNAUTHORIZED, "unauthorized"));
    }
    if app != FLY_APP {
        return Err((StatusCode::NOT_FOUND, "app not found"));
    }
    Ok(())
}

async fn create(
    State(machines): State<Machines>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    let Some(image) = body["config"]["image"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "config.image is required");
    };
    let metadata = body["config"]["metadata"]
        .as_object()
        .map(|m| {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
        })
        .unwrap_or_default();
    let machine = FakeMachine {
        id: hex::encode(rand::random::<[u8; 7]>()),
        name: body["name"].as_str().unwrap_or_default().to_owned(),
        // Created machines start at once, unless their image is broken.
        state: if image.contains("broken") { "created" } else { "started" }.to_owned(),
        image: image.to_owned(),
        metadata,
    };
    let answer = machine.json();
    machines.lock().expect("lock").push(machine);
    Json(answer).into_response()
}

async fn list(
    State(machines): State<Machines>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    let filters: Vec<(&str, &String)> =
        query.iter().filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?, v))).collect();
    let found: Vec<Value> = machines
        .lock()
        .expect("lock")
        .iter()
        .filter(|m| m.state != "destroyed")
        .filter(|m| filters.iter().all(|(k, v)| m.metadata.get(*k) == Some(v)))
        .map(FakeMachine::json)
        .collect();
    Json(found).into_response()
}

/// Applies `change` to machine `id` and answers it, or 404.
fn with_machine(
    machines: &Machines,
    id: &str,
    change: impl FnOnce(&mut FakeMachine) -> Result<(), Refusal>,
) -> Response {
    let mut machines = machines.lock().expect("lock");
    match machines.iter_mut().find(|m| m.id == id && m.state != "destroyed") {
        Some(machine) => match change(machine) {
            Ok(()) => Json(machine.json()).into_response(),
            Err((status, message)) => error(status, message),
        },
        None => error(StatusCode::NOT_FOUND, "machine not found"),
    }
}

async fn show(
    State(machines): State<Machines>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    with_machine(&machines, &id, |_| Ok(()))
}

async fn destroy(
    State(machines): State<Machines>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    with_machine(&machines, &id, |m| {
        m.state = "destroyed".into();
        Ok(())
    });
    Json(json!({ "ok": true })).into_response()
}

async fn wait(
    State(machines): State<Machines>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    let wanted = query.get("state").cloned().unwrap_or_else(|| "started".into());
    let now = machines.lock().expect("lock").iter().find(|m| m.id == id).map(|m| m.state.clone());
    match now {
        None => error(StatusCode::NOT_FOUND, "machine not found"),
        Some(state) if state == wanted => Json(json!({ "ok": true })).into_response(),
        // The real API holds the request up to `timeout`; the fake answers its timeout at once.
        Some(_) => {
            error(StatusCode::REQUEST_TIMEOUT, "deadline_exceeded: machine did not reach the state")
        }
    }
}

async fn action(
    State(machines): State<Machines>,
    Path((app, id, verb)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, message)) = authorized(&headers, &app) {
        return error(status, message);
    }
    with_machine(&machines, &id, |m| {
        match verb.as_str() {
            "start" if m.image.contains("broken") => m.state = "failed".into(),
            "start" => m.state = "started".into(),
            "stop" => m.state = "stopped".into(),
            _ => return Err((StatusCode::NOT_FOUND, "no such action")),
        }
        Ok(())
    })
}

impl FakeFly {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let machines: Machines = Arc::default();
        let app = Router::new()
            .route("/v1/apps/{app}/machines", post(create).get(list))
            .route("/v1/apps/{app}/machines/{id}", get(show).delete(destroy))
            .route("/v1/apps/{app}/machines/{id}/wait", get(wait))
            .route("/v1/apps/{app}/machines/{id}/{verb}", post(action))
            .with_state(machines.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: server.url(), machines, _server: server })
    }

    /// Every machine ever created: (id, image, state), oldest first.
    pub fn machines(&self) -> Vec<(String, String, String)> {
        self.machines
            .lock()
            .expect("lock")
            .iter()
            .map(|m| (m.id.clone(), m.image.clone(), m.state.clone()))
            .collect()
    }

    /// Adds a started machine tagged as launched for `deployment` of `site`, as one a crash left
    /// behind (or another environment launched); answers its id.
    pub fn add_machine(&self, site: &str, deployment: i64, image: &str) -> String {
        let machine = FakeMachine {
            id: hex::encode(rand::random::<[u8; 7]>()),
            name: format!("{site}-{deployment}"),
            state: "started".to_owned(),
            image: image.to_owned(),
            metadata: HashMap::from([
                ("decentraspace_site".to_owned(), site.to_owned()),
                ("decentraspace_deployment".to_owned(), deployment.to_string()),
            ]),
        };
        let id = machine.id.clone();
        self.machines.lock().expect("lock").push(machine);
        id
    }

    /// A machine's state (empty for an unknown id).
    pub fn state(&self, id: &str) -> String {
        self.machines
            .lock()
            .expect("lock")
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state.clone())
            .unwrap_or_default()
    }

    /// Sets a machine's state, as when it exits on its own.
    pub fn set_state(&self, id: &str, state: &str) {
        if let Some(m) = self.machines.lock().expect("lock").iter_mut().find(|m| m.id == id) {
            m.state = state.to_owned();
        }
    }
}

/// A small HTTP server standing in for a site's container: it answers `<reply>` with the
/// forwarded host, and echoes the body of a POST.
pub struct FakeContainer {
    /// Its port.
    pub port: u16,
    _server: Served,
}

impl FakeContainer {
    /// Starts one answering `reply`.
    pub async fn start(reply: &'static str) -> anyhow::Result<Self> {
        let app = Router::new().fallback(move |headers: HeaderMap, body: String| async move {
            let host = headers
                .get("x-forwarded-host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ([("x-served-by", reply)], format!("{reply} for {host}{body}"))
        });
        let server = Served::start(app).await?;
        Ok(Self { port: server.port(), _server: server })
    }
}
