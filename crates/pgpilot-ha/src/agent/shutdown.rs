//! Shutdown (SIGTERM) in one place: stop the background task; unless paused, stop PostgreSQL,
//! close the watchdog, and if we hold the leader key publish the shutdown checkpoint and release
//! the key; touch our member key one last time. Paused: PostgreSQL and the key stay, the
//! watchdog is closed. If PostgreSQL can not be stopped, the key and the watchdog stay. Then the
//! guard's pipe is closed: a disarmed guard exits (and is waited for), an armed one (PostgreSQL
//! could not be stopped) keeps its deadline and fences at it. Last, the callbacks still running
//! (`on_stop`) are given a few seconds to finish, then killed.

use std::time::Duration;

use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{PgControl, StopMode};
use pgpilot_types::{Peers, Role, State};
use tracing::{error, info};

use super::Agent;

/// How long the agent waits at exit for a callback still running (`on_stop`). Patroni does not
/// wait and leaves it running; here nothing the agent started outlives it.
const CALLBACKS_AT_EXIT: Duration = Duration::from_secs(10);

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// The written shutdown order (module docs).
    pub(super) async fn shutdown(&mut self) {
        self.stop_for_shutdown().await;
        self.guard.close();
        self.hooks.finish(CALLBACKS_AT_EXIT).await;
    }

    async fn stop_for_shutdown(&mut self) {
        // No renewal from here on, as in Patroni, whose loop has stopped: the key is deleted
        // below, or left to expire (with the guard armed) when PostgreSQL can not be stopped.
        self.keeper.released();
        if let Some(task) = self.task.take() {
            task.handle.abort();
        }
        let paused = self.last_cluster.as_deref().is_some_and(Cluster::is_paused);
        if paused {
            info!("Leader key is not deleted and Postgresql is not stopped due paused state");
            self.disable_fencing();
            return;
        }
        let was_leader = self.last_renewal.is_some();
        if !was_leader {
            self.leave_sync_duty().await;
        }
        self.state = State::Stopping;
        match self.stop_then_disarm(StopMode::Fast).await {
            Ok(()) => {
                self.state = State::Stopped;
                if was_leader {
                    self.publish_shutdown_checkpoint("shutdown").await;
                    match self.dcs.delete_leader().await {
                        Ok(true) => info!("Leader key released"),
                        Ok(false) => {}
                        Err(e) => error!("could not release the leader key: {e}"),
                    }
                }
            }
            Err(e) => {
                // PostgreSQL still runs: keep the key, a second primary must never appear.
                error!(
                    "PostgreSQL shutdown failed, leader key not removed.{} ({e})",
                    if self.watchdog.is_running() {
                        " Leaving watchdog running."
                    } else {
                        ""
                    }
                );
                return;
            }
        }
        self.last_pg = None;
        self.role = if was_leader {
            Role::Demoted
        } else {
            Role::Replica
        };
        let cluster = self.last_cluster.clone();
        self.touch_member(cluster.as_deref()).await;
    }
}
