//! Patroni's watchdog rules over a fake device that records what it was told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgpilot_config::{WatchdogConfig, WatchdogMode};

use super::{Watchdog, WatchdogDevice, WatchdogError, WatchdogOpener};

/// What the fake devices were told, in order: `open`, `timeout=N`, `1` (keepalive), `V`.
type Calls = Arc<Mutex<Vec<String>>>;

/// A fake driver: `usable` and `opens` say whether the device is there and opens; `fixed`
/// makes a device whose timeout can not be set (it stays at that many seconds).
struct Fake {
    calls: Calls,
    usable: Mutex<bool>,
    opens: bool,
    fixed: Option<i64>,
}

struct FakeDevice {
    calls: Calls,
    timeout: i64,
    fixed: bool,
}

impl WatchdogOpener for Fake {
    fn open(&self, _: &WatchdogConfig) -> Result<Box<dyn WatchdogDevice>, WatchdogError> {
        if !self.opens {
            return Err(WatchdogError::Open(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            )));
        }
        self.calls.lock().unwrap().push("open".into());
        Ok(Box::new(FakeDevice {
            calls: self.calls.clone(),
            timeout: self.fixed.unwrap_or(60),
            fixed: self.fixed.is_some(),
        }))
    }

    fn usable(&self, _: &WatchdogConfig) -> bool {
        *self.usable.lock().unwrap()
    }

    fn describe(&self, _: &WatchdogConfig) -> String {
        "fake".into()
    }
}

impl WatchdogDevice for FakeDevice {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn can_set_timeout(&self) -> bool {
        !self.fixed
    }
    fn can_be_disabled(&self) -> bool {
        true
    }
    fn set_timeout(&mut self, seconds: i64) -> Result<(), WatchdogError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("timeout={seconds}"));
        self.timeout = seconds;
        Ok(())
    }
    fn timeout(&mut self) -> Result<i64, WatchdogError> {
        Ok(self.timeout)
    }
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.calls.lock().unwrap().push("1".into());
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<(), WatchdogError> {
        self.calls.lock().unwrap().push("V".into());
        Ok(())
    }
}

fn fake(usable: bool, opens: bool, fixed: Option<i64>) -> (Arc<Fake>, Calls) {
    let calls = Calls::default();
    let f = Fake {
        calls: calls.clone(),
        usable: Mutex::new(usable),
        opens,
        fixed,
    };
    (Arc::new(f), calls)
}

fn config(mode: WatchdogMode, safety_margin: i64) -> WatchdogConfig {
    WatchdogConfig {
        mode,
        safety_margin,
        ..Default::default()
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;

/// A watchdog over `opener` with loop_wait 10 s.
fn armed_for(opener: &Arc<Fake>, mode: WatchdogMode, safety_margin: i64, ttl: u64) -> Watchdog {
    Watchdog::new(opener.clone(), &config(mode, safety_margin), S(ttl), S(10))
}

/// Taken: ttl - safety_margin, a keepalive per renewal, a new ttl applied with the next
/// keepalive (not before), closed with `V` on disable and silent afterwards.
#[test]
fn armed_pinged_reconfigured_with_a_keepalive_and_closed() {
    let (opener, calls) = fake(true, true, None);
    let w = armed_for(&opener, WatchdogMode::Automatic, 5, 30);
    assert!(!w.is_running());
    assert!(w.activate());
    assert!(w.is_running());
    w.keepalive();
    w.configure(&config(WatchdogMode::Automatic, 5), S(40), S(10));
    assert_eq!(*calls.lock().unwrap(), ["open", "timeout=25", "1"]);
    w.keepalive();
    w.disable();
    w.keepalive();
    assert!(!w.is_running());
    assert_eq!(
        *calls.lock().unwrap(),
        ["open", "timeout=25", "1", "1", "timeout=35", "V"]
    );
}

/// `safety_margin: -1`: half the ttl. `mode: off` set while armed closes at once.
#[test]
fn half_the_ttl_and_off_closes_at_once() {
    let (opener, calls) = fake(true, true, None);
    let w = armed_for(&opener, WatchdogMode::Required, -1, 30);
    assert!(w.activate());
    w.configure(&config(WatchdogMode::Off, -1), S(30), S(10));
    assert!(!w.is_running());
    assert!(w.is_healthy(), "off is never unhealthy");
    w.keepalive();
    assert_eq!(*calls.lock().unwrap(), ["open", "timeout=15", "V"]);
    // Back on: armed again with the next keepalive of the leader.
    w.configure(&config(WatchdogMode::Automatic, -1), S(30), S(10));
    w.keepalive();
    assert!(w.is_running());
}

/// `required` without a usable device: unhealthy, activation refused; after a failed
/// activation the device is not tried again (nor healthy) until the settings change.
#[test]
fn required_without_a_device() {
    let (opener, calls) = fake(false, false, None);
    let w = armed_for(&opener, WatchdogMode::Required, 5, 30);
    assert!(!w.is_healthy());
    assert!(!w.activate());
    w.disable();
    *opener.usable.lock().unwrap() = true;
    assert!(!w.is_healthy(), "failed until the settings change");
    w.configure(&config(WatchdogMode::Required, 4), S(30), S(10));
    assert!(w.is_healthy());
    assert!(calls.lock().unwrap().is_empty());
}

/// `automatic` goes on without a device, and does not try again at every activation.
#[test]
fn automatic_without_a_device() {
    let (opener, _) = fake(false, false, None);
    let w = armed_for(&opener, WatchdogMode::Automatic, 5, 30);
    assert!(w.is_healthy());
    assert!(w.activate());
    assert!(!w.is_running());
    assert!(w.state().failed);
    assert!(w.activate());
}

/// A timeout shorter than loop_wait leaves no slack: no watchdog (required: unhealthy).
#[test]
fn no_slack_no_watchdog() {
    // ttl 20 - margin 15 = 5 s < loop_wait 10 s.
    let (opener, calls) = fake(true, true, None);
    let w = armed_for(&opener, WatchdogMode::Required, 15, 20);
    assert!(!w.is_healthy());
    assert!(!w.activate());
    let w = armed_for(&opener, WatchdogMode::Automatic, 15, 20);
    assert!(w.activate());
    assert!(!w.is_running());
    assert!(calls.lock().unwrap().is_empty());
}

/// A device whose timeout can not be set: used (with a warning) in automatic mode even if its
/// timeout outlives the key; refused and closed again in required mode.
#[test]
fn fixed_timeout_longer_than_the_key() {
    let (opener, calls) = fake(true, true, Some(60));
    let w = armed_for(&opener, WatchdogMode::Automatic, 5, 30);
    assert!(w.activate());
    assert!(w.is_running());
    let w = armed_for(&opener, WatchdogMode::Required, 5, 30);
    assert!(!w.activate());
    assert!(!w.is_running());
    assert!(!w.is_healthy());
    assert_eq!(*calls.lock().unwrap(), ["open", "open", "V"]);
}

/// A fixed timeout shorter than loop_wait would fire between two cycles: closed at once.
#[test]
fn fixed_timeout_shorter_than_loop_wait() {
    let (opener, calls) = fake(true, true, Some(3));
    let w = armed_for(&opener, WatchdogMode::Automatic, 5, 30);
    assert!(w.activate());
    assert!(!w.is_running());
    assert_eq!(*calls.lock().unwrap(), ["open", "V"]);
}
