//! The instance state machine of a dynamic site, and its record: every change is checked against
//! the transitions below and written with its reason, in the caller's transaction.
//!
//! ```text
//! starting ──started──▶ running ──stop──▶ stopping ──stopped──▶ stopped
//!    │                     │                                      │
//!    └──────exited────▶ crashed ◀──exited─┘            start ◀────┘ (and from crashed)
//! any ──destroy──▶ destroyed
//! ```

use std::fmt;

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its machine is starting.
    Starting,
    /// Its machine runs and the gateway proxies to it.
    Running,
    /// Its machine was asked to stop.
    Stopping,
    /// Its machine is stopped (its service is not active).
    Stopped,
    /// Its machine went down on its own.
    Crashed,
    /// Its machine is gone for good.
    Destroyed,
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The runtime reports it started.
    Started,
    /// It is asked to stop (its service was paused or suspended).
    Stop,
    /// The runtime reports it stopped.
    Stopped,
    /// It is asked to start (its service is active again, or it crashed).
    Start,
    /// It went down on its own.
    Exited,
    /// It is destroyed (replaced by a new deployment, or its service cancelled).
    Destroy,
}

impl State {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Crashed => "crashed",
            State::Destroyed => "destroyed",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "starting" => State::Starting,
            "running" => State::Running,
            "stopping" => State::Stopping,
            "stopped" => State::Stopped,
            "crashed" => State::Crashed,
            "destroyed" => State::Destroyed,
            _ => return None,
        })
    }

    /// Where `event` takes an instance in this state, or `None` when it cannot happen here.
    pub fn next(self, event: Event) -> Option<State> {
        use {Event as E, State as S};
        Some(match (self, event) {
            (S::Destroyed, _) => return None,
            (_, E::Destroy) => S::Destroyed,
            (S::Starting, E::Started) => S::Running,
            (S::Starting | S::Running, E::Exited) => S::Crashed,
            (S::Running, E::Stop) => S::Stopping,
            (S::Stopping, E::Stopped) => S::Stopped,
            (S::Stopped | S::Crashed, E::Start) => S::Starting,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the machine does not allow.
#[derive(Debug, thiserror::Error)]
#[error("an instance that is {from} cannot take {event:?}")]
pub struct Invalid {
    /// Where it was.
    pub from: State,
    /// What was asked.
    pub event: Event,
}

/// Moves the site's instance (machine `machine`, currently `from`) by `event`, recording why.
/// Answers the new state; nothing is written when the move is not allowed, or the instance is no
/// longer in `from` (another replica moved it).
pub async fn transition(
    conn: &mut sqlx::PgConnection,
    site: i64,
    machine: &str,
    from: State,
    event: Event,
    reason: &str,
) -> anyhow::Result<Option<State>> {
    let to = from.next(event).ok_or(Invalid { from, event })?;
    let moved = sqlx::query!(
        "update site_instances set state = $4, updated_at = now()
         where site_id = $1 and machine_id = $2 and state = $3",
        site,
        machine,
        from.as_str(),
        to.as_str()
    )
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(None);
    }
    record(conn, site, machine, Some(from), to, reason).await?;
    Ok(Some(to))
}

/// Writes one transition to the instance's history.
pub async fn record(
    conn: &mut sqlx::PgConnection,
    site: i64,
    machine: &str,
    from: Option<State>,
    to: State,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into site_instance_events (site_id, machine_id, from_state, to_state, reason)
         values ($1, $2, $3, $4, $5)",
        site,
        machine,
        from.map(State::as_str),
        to.as_str(),
        reason
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Event as E, State as S};

    #[test]
    fn the_lifecycle_goes_round() {
        let mut at = S::Starting;
        for (event, to) in [
            (E::Started, S::Running),
            (E::Stop, S::Stopping),
            (E::Stopped, S::Stopped),
            (E::Start, S::Starting),
            (E::Exited, S::Crashed),
            (E::Start, S::Starting),
            (E::Started, S::Running),
            (E::Exited, S::Crashed),
            (E::Destroy, S::Destroyed),
        ] {
            at = at.next(event).unwrap_or_else(|| panic!("{at} cannot take {event:?}"));
            assert_eq!(at, to);
        }
    }

    #[test]
    fn impossible_moves_are_refused() {
        assert_eq!(S::Running.next(E::Start), None, "already running");
        assert_eq!(S::Stopped.next(E::Stop), None, "already stopped");
        assert_eq!(S::Starting.next(E::Stop), None, "stop waits for it to start");
        assert_eq!(S::Stopped.next(E::Started), None, "start is asked first");
        assert_eq!(S::Destroyed.next(E::Start), None, "destroyed is final");
        assert_eq!(S::Destroyed.next(E::Destroy), None);
        for state in [S::Starting, S::Running, S::Stopping, S::Stopped, S::Crashed] {
            assert_eq!(state.next(E::Destroy), Some(S::Destroyed));
            assert_eq!(S::parse(state.as_str()), Some(state));
        }
    }
}
