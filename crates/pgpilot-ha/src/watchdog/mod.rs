//! The watchdog (spec/ha-loop.md §5.10, Patroni's `patroni/watchdog`): the last fence of
//! DESIGN.md's second invariant. While this member leads, a watchdog device is armed with a
//! timeout shorter than the leader key's TTL and kept alive after every successful renewal; if
//! the agent hangs (so it can neither renew nor demote), the device resets the host before the
//! key can expire and another member be promoted.
//!
//! [`Watchdog`] is the agent's handle, with Patroni's rules: armed only for leader duty
//! ([`Watchdog::activate`] before a promotion, after bootstrap, on taking or holding the key),
//! timeout `ttl - safety_margin` (`ttl / 2` for -1) and never less than `loop_wait`, new settings
//! applied at the next keepalive (so the timeout changes together with a renewal), closed with
//! the magic `V` ([`Watchdog::disable`]) when the member stops leading, in maintenance mode and
//! on a clean shutdown. In `required` mode a member without a working device is not
//! [`healthy`](Watchdog::is_healthy): it does not run for leader and `/patroni` says
//! `watchdog_failed`.
//!
//! The devices sit behind [`WatchdogOpener`] / [`WatchdogDevice`] so tests use fakes;
//! [`SystemWatchdogs`] opens the real ones (`device.rs`). Device calls are short system calls made
//! from the cycle, as Patroni makes them from its loop.
//!
//! A device is never closed on drop: a Linux watchdog closed without `V` keeps counting, so an
//! agent that dies while leading still resets its host.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pgpilot_config::{WatchdogConfig, WatchdogMode};
use tracing::{debug, error, info, warn};

mod device;

pub use device::SystemWatchdogs;

/// A device operation that failed; the sentence is Patroni's.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("Can't open watchdog device: {0}")]
    Open(#[source] std::io::Error),
    /// An ioctl or write on an open device.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Invalid timeout {0}. Supported values are between 1 and 65535")]
    InvalidTimeout(i64),
}

/// An open watchdog device. Any write keeps it alive; closing it stops it only after the magic
/// `V` and only if the driver supports that.
pub trait WatchdogDevice: Send {
    /// For the log: `Software Watchdog (firmware 1) at /dev/watchdog1`.
    fn describe(&self) -> String;
    /// The driver takes a timeout (`WDIOF_SETTIMEOUT`).
    fn can_set_timeout(&self) -> bool;
    /// Closing after `V` stops the timer (`WDIOF_MAGICCLOSE`).
    fn can_be_disabled(&self) -> bool;
    fn set_timeout(&mut self, seconds: i64) -> Result<(), WatchdogError>;
    /// The timeout in force, in seconds.
    fn timeout(&mut self) -> Result<i64, WatchdogError>;
    fn keepalive(&mut self) -> Result<(), WatchdogError>;
    /// Magic close: `V`, then close.
    fn close(self: Box<Self>) -> Result<(), WatchdogError>;
}

/// Opens watchdog devices: the seam tests replace.
pub trait WatchdogOpener: Send + Sync {
    fn open(&self, config: &WatchdogConfig) -> Result<Box<dyn WatchdogDevice>, WatchdogError>;
    /// Whether opening is expected to work (Patroni: the device exists and we may write it).
    fn usable(&self, config: &WatchdogConfig) -> bool;
    /// For the log, before the device is open.
    fn describe(&self, config: &WatchdogConfig) -> String;
}

/// The settings a device is configured from: the local `watchdog` section and the leader key's
/// timing from the dynamic configuration.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    config: WatchdogConfig,
    ttl: Duration,
    loop_wait: Duration,
}

impl Settings {
    fn timeout(&self) -> i64 {
        self.config.timeout(self.ttl)
    }

    /// How much later than a missed cycle the watchdog fires; must not be negative.
    fn timing_slack(&self) -> i64 {
        self.timeout() - i64::try_from(self.loop_wait.as_secs()).unwrap_or(i64::MAX)
    }

    fn same_device(&self, other: &Settings) -> bool {
        self.config.driver == other.config.driver && self.config.device == other.config.device
    }
}

/// The watchdog's state behind the [`Watchdog`] handle.
struct WatchdogState {
    opener: Arc<dyn WatchdogOpener>,
    /// The settings wanted now.
    wanted: Settings,
    /// The settings of the last activation; while active, changes wait for the next keepalive.
    in_force: Settings,
    device: Option<Box<dyn WatchdogDevice>>,
    /// Leader duty asked for the watchdog (Patroni's `active`): keepalives go to the device and
    /// pending settings are applied with them.
    active: bool,
    /// The last activation found no usable device. Like Patroni's switch to its null watchdog,
    /// no device is tried again until the settings change (no log line every cycle, no leader
    /// key taken and released every cycle), and in `required` mode the member is not healthy.
    failed: bool,
}

/// The agent's watchdog (module docs). A cheap handle: the agent's lease keeper
/// (`agent/keeper.rs`) keeps the device alive between cycles with the renewals it makes, so the
/// state lives behind a mutex (held for a device call at most, never across an await).
#[derive(Clone)]
pub struct Watchdog(Arc<Mutex<WatchdogState>>);

impl Watchdog {
    pub fn new(
        opener: Arc<dyn WatchdogOpener>,
        config: &WatchdogConfig,
        ttl: Duration,
        loop_wait: Duration,
    ) -> Watchdog {
        Watchdog(Arc::new(Mutex::new(WatchdogState::new(
            opener, config, ttl, loop_wait,
        ))))
    }

    fn state(&self) -> MutexGuard<'_, WatchdogState> {
        // A panic while the lock was held leaves plain fields: go on with them.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes new settings (a reloaded local configuration, a new ttl or loop_wait in `/config`).
    /// `off` closes the device at once; other changes to an armed device wait for the next
    /// [`keepalive`](Self::keepalive), so that a new timeout comes with a renewed key.
    pub fn configure(&self, config: &WatchdogConfig, ttl: Duration, loop_wait: Duration) {
        self.state().configure(config, ttl, loop_wait);
    }

    /// Arms the watchdog for leader duty. `false` only in `required` mode, when no device could
    /// be armed with a safe timeout: the caller must not run a primary.
    pub fn activate(&self) -> bool {
        self.state().activate()
    }

    /// A device is open and armed.
    pub fn is_running(&self) -> bool {
        self.state().is_running()
    }

    /// Patroni's `is_healthy`: `false` only in `required` mode when the timing leaves no slack,
    /// the last activation failed, or the device can not be opened.
    pub fn is_healthy(&self) -> bool {
        self.state().is_healthy()
    }

    /// After a successful leader key renewal: resets the timer and applies pending settings.
    pub fn keepalive(&self) {
        self.state().keepalive();
    }

    /// Stops leader duty: the device, if open, is closed with the magic `V`.
    pub fn disable(&self) {
        self.state().disable();
    }
}

impl WatchdogState {
    fn new(
        opener: Arc<dyn WatchdogOpener>,
        config: &WatchdogConfig,
        ttl: Duration,
        loop_wait: Duration,
    ) -> WatchdogState {
        let wanted = Settings {
            config: config.clone(),
            ttl,
            loop_wait,
        };
        WatchdogState {
            opener,
            in_force: wanted.clone(),
            wanted,
            device: None,
            active: false,
            failed: false,
        }
    }

    /// Takes new settings (a reloaded local configuration, a new ttl or loop_wait in `/config`).
    /// `off` closes the device at once; other changes to an armed device wait for the next
    /// [`keepalive`](Self::keepalive), so that a new timeout comes with a renewed key.
    fn configure(&mut self, config: &WatchdogConfig, ttl: Duration, loop_wait: Duration) {
        let wanted = Settings {
            config: config.clone(),
            ttl,
            loop_wait,
        };
        if wanted == self.wanted {
            return;
        }
        self.wanted = wanted;
        if self.wanted.config.mode == WatchdogMode::Off {
            self.close_device();
        }
        if !self.active || self.wanted.config.mode == WatchdogMode::Off {
            self.in_force = self.wanted.clone();
            self.failed = false;
        }
    }

    /// Arms the watchdog for leader duty. `false` only in `required` mode, when no device could
    /// be armed with a safe timeout: the caller must not run a primary.
    fn activate(&mut self) -> bool {
        self.active = true;
        self.arm()
    }

    /// A device is open and armed.
    fn is_running(&self) -> bool {
        self.device.is_some()
    }

    /// Patroni's `is_healthy`: `false` only in `required` mode when the timing leaves no slack,
    /// the last activation failed, or the device can not be opened.
    fn is_healthy(&self) -> bool {
        if self.wanted.config.mode != WatchdogMode::Required {
            return true;
        }
        self.wanted.timing_slack() >= 0
            && !self.failed
            && (self.device.is_some() || self.opener.usable(&self.wanted.config))
    }

    /// After a successful leader key renewal: resets the timer and applies pending settings.
    fn keepalive(&mut self) {
        if !self.active {
            return;
        }
        if let Some(d) = self.device.as_mut() {
            if let Err(e) = d.keepalive() {
                error!("Error while sending keepalive: {e}");
            }
        }
        if self.wanted == self.in_force {
            return;
        }
        let old = std::mem::replace(&mut self.in_force, self.wanted.clone());
        if old.config.mode == WatchdogMode::Off || !old.same_device(&self.wanted) {
            self.close_device();
            self.failed = false;
            self.arm();
        } else if old.timeout() != self.wanted.timeout() {
            self.update_timeout();
        }
    }

    /// Stops leader duty: the device, if open, is closed with the magic `V`.
    fn disable(&mut self) {
        self.close_device();
        self.active = false;
    }

    /// Patroni's `_activate`, except that a device that can not be armed safely is closed
    /// again instead of being left open without keepalives.
    fn arm(&mut self) -> bool {
        self.in_force = self.wanted.clone();
        let s = self.wanted.clone();
        let required = s.config.mode == WatchdogMode::Required;
        if s.config.mode == WatchdogMode::Off {
            return true;
        }
        if s.timing_slack() < 0 {
            warn!(
                "Watchdog not supported because leader TTL {} is less than 2x loop_wait {}",
                s.ttl.as_secs(),
                s.loop_wait.as_secs()
            );
            self.close_device();
            self.failed = true;
        }
        if self.device.is_none() && !self.failed {
            match self.open_with_timeout(&s) {
                Ok(Some(device)) => self.device = Some(device),
                // Closed again as unsafe: not tried at every activation either.
                Ok(None) => self.failed = true,
                Err(e) => {
                    let what = self.opener.describe(&s.config);
                    if required {
                        warn!("Could not activate {what}: {e}");
                    } else {
                        debug!("Could not activate {what}: {e}");
                    }
                    self.failed = true;
                }
            }
        }
        let actual = match self.device.as_mut().map(|d| d.timeout()) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                error!("{e}");
                None
            }
            None => None,
        };
        if let Some(d) = &self.device {
            if !d.can_be_disabled() {
                warn!("Watchdog implementation can't be disabled. Watchdog will trigger after Patroni loses leader key.");
            }
        }
        let safe = actual.is_some_and(|t| t <= s.timeout());
        if !safe {
            if required {
                match actual {
                    None => error!(
                        "Configuration requires watchdog, but watchdog could not be configured."
                    ),
                    Some(t) => error!(
                        "Configuration requires watchdog, but a safe watchdog timeout {} could not be configured. Watchdog timeout is {t}.",
                        s.timeout()
                    ),
                }
                self.close_device();
                self.failed = true;
                return false;
            }
            if let Some(t) = actual {
                warn!(
                    "Watchdog timeout {t} seconds does not ensure safe termination within {} seconds",
                    s.timeout()
                );
            }
        }
        if let (Some(d), Some(t)) = (&self.device, actual) {
            info!(
                "{} activated with {t} second timeout, timing slack {} seconds",
                d.describe(),
                s.timing_slack()
            );
        }
        true
    }

    /// Opens the device and sets the timeout. `Ok(None)`: the driver's own timeout is shorter
    /// than `loop_wait` and the device was closed again (it would fire between two cycles).
    fn open_with_timeout(
        &self,
        s: &Settings,
    ) -> Result<Option<Box<dyn WatchdogDevice>>, WatchdogError> {
        let mut device = self.opener.open(&s.config)?;
        let configured = (|| {
            if device.can_set_timeout() {
                let timeout = s.timeout();
                if !(1..0xFFFF).contains(&timeout) {
                    return Err(WatchdogError::InvalidTimeout(timeout));
                }
                device.set_timeout(timeout)?;
            }
            device.timeout()
        })();
        let actual = match configured {
            Ok(t) => t,
            Err(e) => {
                // Opened but not configured: stop it again rather than leave it counting.
                if let Err(close) = device.close() {
                    error!("Error while disabling watchdog: {close}");
                }
                return Err(e);
            }
        };
        let loop_wait = i64::try_from(s.loop_wait.as_secs()).unwrap_or(i64::MAX);
        if actual < loop_wait {
            error!(
                "loop_wait of {loop_wait} seconds is too long for watchdog {actual} second timeout"
            );
            if device.can_be_disabled() {
                info!("Disabling watchdog due to unsafe timeout.");
                if let Err(e) = device.close() {
                    error!("Error while disabling watchdog: {e}");
                }
                return Ok(None);
            }
        }
        Ok(Some(device))
    }

    /// A new ttl or safety margin on an armed device (applied with a keepalive).
    fn update_timeout(&mut self) {
        let s = self.wanted.clone();
        let Some(d) = self.device.as_mut() else {
            return;
        };
        if !d.can_set_timeout() {
            return;
        }
        match d.set_timeout(s.timeout()).and_then(|()| d.timeout()) {
            Ok(t) => info!(
                "{} updated with {t} second timeout, timing slack {} seconds",
                d.describe(),
                s.timing_slack()
            ),
            Err(e) => error!("Error while sending keepalive: {e}"),
        }
    }

    fn close_device(&mut self) {
        let Some(mut d) = self.device.take() else {
            return;
        };
        let what = d.describe();
        if !d.can_be_disabled() {
            // Give the administrator the whole timeout to clean up.
            let timeout = d.keepalive().and_then(|()| d.timeout());
            warn!(
                "Watchdog implementation can't be disabled. System will reboot after {} seconds when watchdog times out.",
                timeout.map_or_else(|e| e.to_string(), |t| t.to_string())
            );
        }
        match d.close() {
            Ok(()) => info!("{what} closed"),
            Err(e) => error!("Error while disabling watchdog: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
