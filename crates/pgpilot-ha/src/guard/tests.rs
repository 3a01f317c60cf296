//! The guard's deadline logic and the agent's side of the protocol, without processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The margin is a tenth of the ttl, never less than 1 s, and the validity counts from when the
/// renewal was sent.
#[test]
fn validity_is_ttl_minus_time_since_sent_minus_margin() {
    assert_eq!(margin(secs(20)), secs(2));
    assert_eq!(margin(secs(8)), secs(1));
    assert_eq!(margin(secs(5)), secs(1));
    assert_eq!(margin(secs(60)), secs(6));
    assert!(process::KILL_AFTER < margin(Duration::ZERO));
    assert_eq!(valid_for(secs(20), ms(300)), ms(17_700));
    assert_eq!(valid_for(secs(20), secs(18)), Duration::ZERO);
    assert_eq!(valid_for(secs(20), secs(30)), Duration::ZERO);
}

/// Every message survives the pipe, and nothing else is read as one.
#[test]
fn messages_round_trip_and_garbage_is_refused() {
    for msg in [
        Message::Arm {
            valid: ms(17_700),
            stamp: Some(ms(123_456_789)),
        },
        Message::Arm {
            valid: ms(0),
            stamp: None,
        },
        Message::Disarm,
    ] {
        let line = msg.encode();
        assert!(line.ends_with('\n'));
        assert_eq!(Message::parse(line.trim_end()), Some(msg), "{line}");
    }
    for bad in [
        "",
        "arm",
        "arm x",
        "arm -5",
        "arm 1 2 3",
        "disarm now",
        "fence",
        "ARM 5",
    ] {
        assert_eq!(Message::parse(bad), None, "{bad:?}");
    }
}

/// Disarmed, the guard waits without a deadline and never fences; armed, it waits until the
/// deadline and fences once it is reached; a new arm moves the deadline, disarm drops it.
#[test]
fn guard_fences_only_when_armed_and_the_deadline_passed() {
    let mut g = GuardState::default();
    assert_eq!(g.step(secs(100)), Step::Wait(None));
    g.message(
        Message::Arm {
            valid: secs(10),
            stamp: Some(secs(100)),
        },
        secs(100),
    );
    assert_eq!(g.deadline(), Some(secs(110)));
    // The fence starts DRAIN (1 s) before the deadline, with what is left of it.
    assert_eq!(g.fence_at(), Some(secs(109)));
    assert_eq!(g.step(secs(100)), Step::Wait(Some(secs(9))));
    assert_eq!(g.step(ms(108_950)), Step::Wait(Some(ms(50))));
    assert_eq!(g.step(secs(109)), Step::Fence { left: secs(1) });
    assert_eq!(g.step(ms(109_600)), Step::Fence { left: ms(400) });
    assert_eq!(g.step(secs(111)), Step::Fence { left: secs(0) });
    // Renewed in time: the deadline moves.
    g.message(
        Message::Arm {
            valid: secs(10),
            stamp: Some(secs(105)),
        },
        secs(105),
    );
    assert_eq!(g.step(secs(110)), Step::Wait(Some(secs(4))));
    assert_eq!(g.step(secs(114)), Step::Fence { left: secs(1) });
    g.fenced();
    assert_eq!(g.step(secs(200)), Step::Wait(None), "fenced once");
    // A replica, a paused cluster: disarmed, never fenced.
    g.message(
        Message::Arm {
            valid: secs(1),
            stamp: None,
        },
        secs(300),
    );
    g.message(Message::Disarm, ms(300_500));
    assert_eq!(g.step(secs(1000)), Step::Wait(None));
}

/// A renewal line read late (the guard was not scheduled, the whole member was frozen) counts
/// from the agent's stamp, not from when it was read; a stamp from the future is not trusted.
#[test]
fn time_in_the_pipe_is_not_given_away() {
    let mut g = GuardState::default();
    g.message(
        Message::Arm {
            valid: secs(17),
            stamp: Some(secs(100)),
        },
        secs(130),
    );
    assert_eq!(
        g.step(secs(130)),
        Step::Fence { left: secs(0) },
        "stale: fence at once, no drain left"
    );
    g.message(
        Message::Arm {
            valid: secs(17),
            stamp: Some(secs(500)),
        },
        secs(200),
    );
    assert_eq!(g.deadline(), Some(secs(217)));
    g.message(
        Message::Arm {
            valid: secs(17),
            stamp: None,
        },
        secs(200),
    );
    assert_eq!(g.deadline(), Some(secs(217)));
    g.message(
        Message::Arm {
            valid: Duration::ZERO,
            stamp: Some(secs(300)),
        },
        secs(300),
    );
    assert_eq!(
        g.step(secs(300)),
        Step::Fence { left: secs(0) },
        "nothing left: fence now"
    );
}

/// The agent gone: a disarmed guard exits; an armed one keeps its deadline, fences at it, and
/// is then done.
#[test]
fn agent_gone_keeps_the_deadline() {
    let mut g = GuardState::default();
    g.agent_gone();
    assert_eq!(g.step(secs(1)), Step::Exit);

    let mut g = GuardState::default();
    g.message(
        Message::Arm {
            valid: secs(5),
            stamp: Some(secs(10)),
        },
        secs(10),
    );
    g.agent_gone();
    assert_eq!(g.step(secs(12)), Step::Wait(Some(secs(2))));
    assert_eq!(g.step(secs(14)), Step::Fence { left: secs(1) });
    g.fenced();
    assert_eq!(g.step(secs(15)), Step::Exit);
}

/// What a fake guard process was told, and whether it takes messages.
#[derive(Default)]
struct Record {
    sent: Vec<Message>,
    refuse: bool,
    closed: Option<bool>,
}

struct FakeLink {
    record: Arc<Mutex<Record>>,
    clock: Option<Duration>,
}

impl GuardLink for FakeLink {
    fn clock(&self) -> Option<Duration> {
        self.clock
    }

    fn send(&mut self, msg: Message) -> Result<(), GuardError> {
        let mut r = self.record.lock().unwrap();
        if r.refuse {
            return Err(GuardError::Write(std::io::Error::other("gone")));
        }
        r.sent.push(msg);
        Ok(())
    }

    fn close(self: Box<Self>, disarmed: bool) {
        self.record.lock().unwrap().closed = Some(disarmed);
    }
}

fn fake(clock: Option<Duration>) -> (Guard, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let link = FakeLink {
        record: record.clone(),
        clock,
    };
    (Guard::new(Box::new(link)), record)
}

/// The agent arms with `ttl - elapsed - margin` and the guard clock's stamp, disarms only an
/// armed guard, and on close tells the link whether the guard may exit.
#[tokio::test(start_paused = true)]
async fn agent_side_arms_disarms_and_closes() {
    let (guard, record) = fake(None);
    assert!(guard.is_healthy() && !guard.is_armed());
    guard.disarm();
    assert!(
        record.lock().unwrap().sent.is_empty(),
        "not armed: no disarm"
    );
    let start = guard.renewal_started();
    tokio::time::advance(ms(300)).await;
    assert!(guard.arm(start, secs(20)));
    assert!(guard.is_armed());
    guard.disarm();
    guard.disarm();
    assert_eq!(
        record.lock().unwrap().sent,
        vec![
            Message::Arm {
                valid: ms(17_700),
                stamp: None
            },
            Message::Disarm
        ]
    );
    guard.close();
    assert_eq!(record.lock().unwrap().closed, Some(true));

    // Armed at shutdown (PostgreSQL could not be stopped): the guard is left armed.
    let (guard, record) = fake(Some(secs(1000)));
    assert!(guard.arm(guard.renewal_started(), secs(8)));
    assert_eq!(
        record.lock().unwrap().sent,
        vec![Message::Arm {
            valid: secs(7),
            stamp: Some(secs(1000))
        }]
    );
    guard.close();
    assert_eq!(record.lock().unwrap().closed, Some(false));
}

/// A guard that does not take a message is not healthy (the member gives up leadership) until
/// one goes through again; a guard that could not start is never healthy; `off` always is.
#[tokio::test(start_paused = true)]
async fn a_guard_that_fails_stands_in_the_way_of_leadership() {
    let (guard, record) = fake(None);
    record.lock().unwrap().refuse = true;
    assert!(!guard.arm(guard.renewal_started(), secs(20)));
    assert!(!guard.is_healthy());
    assert!(guard.failure().unwrap().contains("gone"));
    guard.retry();
    assert!(!guard.is_healthy(), "still refused");
    record.lock().unwrap().refuse = false;
    guard.retry();
    assert!(guard.is_healthy() && !guard.is_armed());
    assert_eq!(record.lock().unwrap().sent, vec![Message::Disarm]);
    assert!(guard.arm(guard.renewal_started(), secs(20)));
    assert!(guard.is_healthy());

    let failed = Guard::failed("can not start the guard process: no such file".into());
    assert!(!failed.is_healthy());
    assert!(!failed.arm(failed.renewal_started(), secs(20)));
    let off = Guard::off();
    assert!(off.is_healthy());
    assert!(off.arm(off.renewal_started(), secs(20)));
    assert!(!off.is_armed());
}
