//! The user's hooks around PostgreSQL (spec/ha-loop.md §5.12, Patroni's `callback_executor.py`
//! and `Postgresql._pre_promote` / `_before_stop`).
//!
//! * Callbacks (`postgresql.callbacks.on_start|on_stop|on_restart|on_reload|on_role_change`) run
//!   as `<command split like shlex> <action> <role> <scope>` without blocking the cycle
//!   ([`Hooks::fire`]). One runs at a time: a callback still running when the next one fires is
//!   killed with its whole process group first. `on_reload` has a slot of its own, so a reload
//!   only ever kills an older `on_reload`. Which callback a start, restart or reload fires is a
//!   decision ([`crate::decide::follow_callback`]); the agent fires it.
//! * `pre_promote` runs before a promotion, as a [`Script`] the agent waits for while it keeps
//!   renewing the leader key; a non-zero exit cancels the promotion
//!   ([`crate::decide::after_pre_promote`]).
//! * `before_stop` runs before PostgreSQL is stopped ([`Hooks::before_stop`]); its failure is
//!   only logged.
//!
//! All of them inherit the agent's environment (from which the `PATRONI_*` variables were
//! removed at start), working directory and output, as in Patroni. The agent waits for the
//! callbacks still running when it shuts down, for a bounded time, then kills them
//! ([`Hooks::finish`]): Patroni leaves them running after it exits.
//!
//! "Called" ([`Hooks::called`]) is Patroni's `cb_called`: set by the first `on_start`,
//! `on_stop`, `on_restart` or `on_role_change` (configured or not). Until then the first cycle
//! that finds PostgreSQL running fires `on_start`, and a start never counts as a role change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::unistd::Pid;
use pgpilot_config::{DynamicConfig, PostgresqlConfig};
use pgpilot_types::Role;
use tracing::{debug, error, info, warn};

mod process;
#[cfg(test)]
mod tests;

pub(crate) use process::Script;
use process::{kill_group, py_list, returncode};

/// The moments a callback is fired for (Patroni's `CallbackAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAction {
    OnStart,
    OnStop,
    OnRestart,
    OnReload,
    OnRoleChange,
}

impl CallbackAction {
    /// The key in `postgresql.callbacks` and the first extra argument.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackAction::OnStart => "on_start",
            CallbackAction::OnStop => "on_stop",
            CallbackAction::OnRestart => "on_restart",
            CallbackAction::OnReload => "on_reload",
            CallbackAction::OnRoleChange => "on_role_change",
        }
    }
}

/// The command line of a callback: the configured command split as Python's `shlex.split`
/// splits it, then `<action> <role> <scope>`. `None` when the command can not be split (an
/// unclosed quote).
pub fn callback_argv(
    command: &str,
    action: CallbackAction,
    role: Role,
    scope: &str,
) -> Option<Vec<String>> {
    let mut argv = shlex::split(command)?;
    if argv.is_empty() {
        return None;
    }
    argv.extend([action.as_str().into(), role.as_str().into(), scope.into()]);
    Some(argv)
}

/// The command line of `pre_promote` / `before_stop`: the command alone, split like shlex.
pub fn hook_argv(command: &str) -> Option<Vec<String>> {
    shlex::split(command).filter(|a| !a.is_empty())
}

/// The hook commands in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSettings {
    pub callbacks: BTreeMap<String, String>,
    pub pre_promote: Option<String>,
    pub before_stop: Option<String>,
}

impl HookSettings {
    /// The local `postgresql` section over the dynamic one, key by key, as Patroni builds its
    /// effective configuration (a local `callbacks` mapping replaces the dynamic one whole).
    pub fn effective(local: &PostgresqlConfig, dynamic: &DynamicConfig) -> HookSettings {
        HookSettings {
            callbacks: if local.callbacks.is_empty() {
                dynamic.callbacks.clone().unwrap_or_default()
            } else {
                local.callbacks.clone()
            },
            pre_promote: local
                .pre_promote
                .clone()
                .or_else(|| dynamic.pre_promote.clone()),
            before_stop: local
                .before_stop
                .clone()
                .or_else(|| dynamic.before_stop.clone()),
        }
    }
}

/// The callback running in a slot.
struct Running {
    /// Tells this run from a later one in the same slot.
    id: u64,
    pgid: Pid,
    argv: Vec<String>,
}

type Slot = Arc<Mutex<Option<Running>>>;

fn lock(slot: &Slot) -> MutexGuard<'_, Option<Running>> {
    // The guarded value is a plain record, valid even if a holder panicked.
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Inner {
    scope: String,
    settings: Mutex<HookSettings>,
    /// `on_start`, `on_stop`, `on_restart`, `on_role_change`.
    callback: Slot,
    /// `on_reload`.
    on_reload: Slot,
    called: AtomicBool,
    next_id: AtomicU64,
}

/// The agent's handle on the hooks; cheap to clone into background tasks.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

impl Hooks {
    pub fn new(scope: &str, settings: HookSettings) -> Hooks {
        Hooks {
            inner: Arc::new(Inner {
                scope: scope.to_string(),
                settings: Mutex::new(settings),
                callback: Slot::default(),
                on_reload: Slot::default(),
                called: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    fn settings(&self) -> HookSettings {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// New commands (a reload of the local configuration, a change of `/config`).
    pub fn configure(&self, settings: HookSettings) {
        *self
            .inner
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    /// Patroni's `cb_called` (module docs).
    pub fn called(&self) -> bool {
        self.inner.called.load(Ordering::SeqCst)
    }

    /// Fires `action` for PostgreSQL in `role` without waiting for it (Patroni's
    /// `call_nowait`). Needs a tokio runtime: the process is reaped by a task.
    pub fn fire(&self, action: CallbackAction, role: Role) {
        if action != CallbackAction::OnReload {
            self.inner.called.store(true, Ordering::SeqCst);
        }
        let Some(command) = self.settings().callbacks.get(action.as_str()).cloned() else {
            return;
        };
        let scope = &self.inner.scope;
        let Some(argv) = callback_argv(&command, action, role, scope) else {
            error!(
                "callback {command} {} {role} {scope} failed: the command can not be split",
                action.as_str()
            );
            return;
        };
        debug!("CallbackExecutor.call({})", py_list(&argv));
        let slot = if action == CallbackAction::OnReload {
            &self.inner.on_reload
        } else {
            &self.inner.callback
        };
        let mut running = lock(slot);
        if let Some(previous) = running.take() {
            if kill_group(previous.pgid) {
                warn!(
                    "Killed {} because it was still running",
                    py_list(&previous.argv)
                );
            }
        }
        let mut script = match Script::spawn(&argv) {
            Ok(s) => s,
            Err(e) => {
                error!("Failed to execute {}: {e}", py_list(&argv));
                return;
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        *running = Some(Running {
            id,
            pgid: script.pgid(),
            argv,
        });
        drop(running);
        let slot = slot.clone();
        tokio::spawn(async move {
            if let Err(e) = script.wait().await {
                warn!("could not wait for a callback: {e}");
            }
            let mut running = lock(&slot);
            if running.as_ref().is_some_and(|r| r.id == id) {
                *running = None;
            }
        });
    }

    /// Whether a callback is still running.
    pub fn busy(&self) -> bool {
        lock(&self.inner.callback).is_some() || lock(&self.inner.on_reload).is_some()
    }

    /// Runs `before_stop` if set and waits for it, at most `limit` (then it is killed). Its
    /// outcome is only logged: the stop goes on.
    pub async fn before_stop(&self, limit: Duration) {
        let Some(command) = self.settings().before_stop else {
            return;
        };
        let Some(argv) = hook_argv(&command) else {
            error!("Exception when calling `{command}`: the command can not be split");
            return;
        };
        let mut script = match Script::spawn(&argv) {
            Ok(s) => s,
            Err(e) => {
                error!("Failed to execute {}: {e}", py_list(&argv));
                return;
            }
        };
        match tokio::time::timeout(limit, script.wait()).await {
            Ok(Ok(status)) => info!(
                "before_stop script `{command}` exited with {}",
                returncode(status)
            ),
            Ok(Err(e)) => error!("Exception when calling `{command}`: {e}"),
            Err(_) => {
                script.kill().await;
                warn!(
                    "before_stop script `{command}` did not finish within {} seconds: killed it",
                    limit.as_secs()
                );
            }
        }
    }

    /// The `pre_promote` command, if one is set.
    pub fn pre_promote(&self) -> Option<String> {
        self.settings().pre_promote
    }

    /// Waits at most `limit` for the callbacks still running, then kills what is left. Called
    /// once the agent has stopped PostgreSQL for good (shutdown), so `on_stop` can finish.
    pub async fn finish(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for slot in [&self.inner.callback, &self.inner.on_reload] {
            if let Some(r) = lock(slot).take() {
                if kill_group(r.pgid) {
                    warn!("Killed {} because it was still running", py_list(&r.argv));
                }
            }
        }
    }
}

/// Runs `pre_promote`'s command line; the agent waits for it (see `agent/leader.rs`).
pub(crate) fn spawn_pre_promote(command: &str) -> Result<Script, String> {
    let Some(argv) = hook_argv(command) else {
        return Err(format!(
            "Exception when calling `{command}`: the command can not be split"
        ));
    };
    Script::spawn(&argv).map_err(|e| format!("Failed to execute {}: {e}", py_list(&argv)))
}

/// Python's `returncode` of a finished hook (exit code, or minus the signal).
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    returncode(status)
}
