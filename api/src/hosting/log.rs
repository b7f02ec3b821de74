//! Deployment logs: every line stamped with the time it was written, appended within a bound the
//! database keeps (whole lines dropped from the start, counted, so a reader's position survives
//! the drop), and
//! streamed as server-sent events while the deployment runs (`GET /hosting/deploy/{id}/log`).
//! A trigger on `deployments` sends a NOTIFY on every change of a log or a state; one listener
//! per replica fans the deployment ids out to that replica's streams.

use std::{convert::Infallible, fmt::Write, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use chrono::Utc;
use decentraspace_db::channels;
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use super::HostingState;
use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    jobs::Job,
};

/// Stands for the lines dropped from the start of a log.
const DROPPED: &str = "[earlier lines dropped]\n";
/// How long a stream waits for a wake-up before it looks anyway (a notice lost while the
/// listener reconnects costs at most this).
const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// `text` with every line starting with the time now (RFC 3339 in UTC, to the millisecond) and
/// ending with a newline (an empty text is one empty line).
pub(crate) fn stamped(text: &str) -> String {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut out = String::with_capacity(text.len() + 25);
    for line in text.split_terminator('\n') {
        let _ = writeln!(out, "{now} {line}");
    }
    if text.is_empty() {
        let _ = writeln!(out, "{now} ");
    }
    out
}

/// The log as its owner reads it whole: the kept lines, after a marker when some were dropped.
pub(super) fn whole(log: String, dropped: i64) -> String {
    if dropped > 0 { format!("{DROPPED}{log}") } else { log }
}

/// Appends `text` (stamped lines) to the deployment's log. The database keeps it within its
/// bound (256 KiB, whole lines; migration `…27_deployment_log_bound.sql`), whatever appends.
pub(super) async fn append(db: &PgPool, id: i64, text: &str) {
    let appended = sqlx::query!("update deployments set log = log || $2 where id = $1", id, text)
        .execute(db)
        .await;
    if let Err(err) = appended {
        tracing::warn!(target: "api::deploy", deployment = id, %err, "cannot append to the log");
    }
}

/// The listener's job: forwards the ids of deployments whose log or state changed to this
/// replica's log streams, and wakes its deploy worker when a deployment is queued, reconnecting
/// after database failures.
pub(super) fn listener(state: &HostingState) -> Job {
    let (db, notices, queued) =
        (state.db.clone(), state.log_notices.clone(), state.deploy_wake.clone());
    Job::new("deployment-listener", move || {
        let (db, notices, queued) = (db.clone(), notices.clone(), queued.clone());
        async move {
            let mut attempt = 0u32;
            loop {
                if let Err(err) = listen(&db, &notices, &queued).await {
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(target: "api::deploy", %err, attempt, "log listener failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))))
                        .await;
                }
            }
        }
    })
}

async fn listen(
    db: &PgPool,
    notices: &broadcast::Sender<i64>,
    queued: &tokio::sync::Notify,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen_all([channels::DEPLOYMENT_LOG, channels::DEPLOYMENT_QUEUED]).await?;
    loop {
        // `None`: the connection dropped; streams look again on their own within LOOK_AGAIN,
        // the worker at its next poll.
        let Some(notification) = listener.try_recv().await? else { continue };
        if notification.channel() == channels::DEPLOYMENT_QUEUED {
            queued.notify_one();
            continue;
        }
        if let Ok(id) = notification.payload().parse::<i64>() {
            // No receiver is fine: nobody is streaming.
            let _ = notices.send(id);
        }
    }
}

/// Where to resume a log stream.
#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct LogQuery {
    /// Resume after this position: the `id` of the last `log` event received (a reconnecting
    /// `EventSource` sends it as `Last-Event-ID`, which wins). From the start when absent.
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// The last event of a log stream: how the deployment ended.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LogEnd {
    /// `live` or `failed`.
    state: String,
    /// Why it failed (also the log's last line).
    error: Option<String>,
}

/// The deployment's log as it is written, as server-sent events: `log` events carry new lines
/// (each starting with its time, RFC 3339 in UTC) and, as `id`, the position reached, to resume
/// from (`Last-Event-ID` or `after`); an `end` event (data: a `LogEnd`) closes the stream once
/// the deployment is live or failed. A deployment that already ended sends its whole log, then
/// `end`.
#[utoipa::path(get, path = "/hosting/deploy/{id}/log", tag = "hosting", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The deployment"), LogQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this position")),
    responses((status = 200, description = "A `text/event-stream`", content_type = "text/event-stream"),
        crate::http::openapi::NotFound))]
pub(super) async fn stream(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resumed = match headers.get("last-event-id") {
        Some(value) => {
            Some(value.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).ok_or_else(
                || ApiError::BadRequest("Last-Event-ID must be the id of a log event".into()),
            )?)
        }
        None => None,
    };
    let position = resumed.or(query.after).unwrap_or(0);
    if position < 0 {
        return Err(ApiError::BadRequest("the position to resume from cannot be negative".into()));
    }
    super::deploy::owned_deployment(&state, &user, id).await?;
    // Subscribed before the first read, so no change between the two goes unseen.
    let reader = Reader {
        db: state.db.clone(),
        id,
        position,
        wake: state.log_notices.subscribe(),
        ended: false,
    };
    let events = futures::stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((Ok(event), reader))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One stream's place in one deployment's log.
struct Reader {
    db: PgPool,
    id: i64,
    /// Characters of the log (dropped ones included) already sent.
    position: i64,
    wake: broadcast::Receiver<i64>,
    ended: bool,
}

impl Reader {
    /// The next event: new lines, else the end once the deployment ended, else waits for a
    /// change. `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            let read = sqlx::query!(
                r#"select log_dropped, length(log)::bigint as "length!", state, error,
                          substr(log, least(greatest($2 - log_dropped, 0), 2147483646)::int + 1) as "tail!"
                   from deployments where id = $1"#,
                self.id,
                self.position
            )
            .fetch_one(&self.db)
            .await;
            let row = match read {
                Ok(row) => row,
                Err(err) => {
                    tracing::warn!(target: "api::deploy", deployment = self.id, %err, "cannot read the log");
                    self.ended = true;
                    return Some(
                        Event::default()
                            .event("error")
                            .data("the log could not be read; reconnect to resume"),
                    );
                }
            };
            let end = row.log_dropped + row.length;
            if self.position < end {
                let mut data = String::new();
                if self.position < row.log_dropped {
                    data.push_str(DROPPED);
                }
                data.push_str(&row.tail);
                self.position = end;
                // A carriage return ends an SSE line as a newline does: say it as one.
                let data = data.replace("\r\n", "\n").replace('\r', "\n");
                return Some(
                    Event::default()
                        .event("log")
                        .id(end.to_string())
                        .data(data.strip_suffix('\n').unwrap_or(&data)),
                );
            }
            if row.state == "live" || row.state == "failed" {
                self.ended = true;
                let end = LogEnd { state: row.state, error: row.error };
                return Event::default().event("end").json_data(&end).ok();
            }
            self.wait().await;
        }
    }

    /// Until this deployment changes (or [`LOOK_AGAIN`] passes).
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(LOOK_AGAIN);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                notice = self.wake.recv() => match notice {
                    Ok(id) if id == self.id => return,
                    Ok(_) => {}
                    // Missed notices may have been this one's.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut deadline).await;
                        return;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_stamped_and_ends_with_a_newline() {
        let out = stamped("one\ntwo\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        for (line, text) in lines.iter().zip(["one", "two"]) {
            let (at, rest) = line.split_once(' ').expect("a stamp, then the line");
            assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
            assert_eq!(rest, text);
        }
        assert!(out.ends_with('\n'));
        assert_eq!(stamped("").lines().count(), 1, "an empty line is kept");
        assert_eq!(stamped("a\n\nb").lines().count(), 3, "so is one between two");
    }

    #[test]
    fn a_log_that_dropped_lines_says_so() {
        assert_eq!(whole("a\n".into(), 0), "a\n");
        assert_eq!(whole("a\n".into(), 10), "[earlier lines dropped]\na\n");
    }
}
