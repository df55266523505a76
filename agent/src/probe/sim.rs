//! A simulated probe whose backend behaviour a test or the simulator sets: answer with a given
//! result, refuse, hang, or answer after a delay. It passes the same contract suite as the
//! real probes (`agent/tests/probe_contract.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{CheckResult, FailureKind, Probe, ProbeId};
use crate::config::ProbeTiming;

/// How the simulated backend behaves.
#[derive(Clone, Debug)]
pub enum SimBehavior {
    /// Answer at once with this result.
    Answer(CheckResult),
    /// Never answer (a hung process or a silent partition).
    Hang,
    /// Answer after a delay (a slow probe).
    Delay(Duration, CheckResult),
}

/// Shared handle that changes a [`SimProbe`]'s behaviour.
#[derive(Clone, Debug)]
pub struct SimControl(Arc<Mutex<SimBehavior>>);

impl SimControl {
    /// A backend that starts healthy.
    pub fn healthy() -> Self {
        SimControl(Arc::new(Mutex::new(SimBehavior::Answer(
            CheckResult::healthy(serde_json::json!({ "sim": true })),
        ))))
    }

    /// Sets the behaviour.
    pub fn set(&self, b: SimBehavior) {
        if let Ok(mut cur) = self.0.lock() {
            *cur = b;
        }
    }

    /// The backend is stopped: connections are refused.
    pub fn stop(&self) {
        self.set(SimBehavior::Answer(CheckResult::unreachable(
            FailureKind::Refused,
            "sim: connection refused",
        )));
    }

    /// The backend hangs.
    pub fn hang(&self) {
        self.set(SimBehavior::Hang);
    }

    /// The backend is healthy again.
    pub fn start(&self) {
        self.set(SimBehavior::Answer(CheckResult::healthy(
            serde_json::json!({ "sim": true }),
        )));
    }

    fn get(&self) -> SimBehavior {
        self.0
            .lock()
            .map(|b| b.clone())
            .unwrap_or(SimBehavior::Hang)
    }
}

/// A probe answering as its [`SimControl`] says.
pub struct SimProbe {
    id: ProbeId,
    timing: ProbeTiming,
    control: SimControl,
}

impl SimProbe {
    /// A simulated probe.
    pub fn new(id: ProbeId, timing: ProbeTiming, control: SimControl) -> Self {
        SimProbe {
            id,
            timing,
            control,
        }
    }
}

impl Probe for SimProbe {
    fn id(&self) -> &ProbeId {
        &self.id
    }
    fn timing(&self) -> ProbeTiming {
        self.timing
    }
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        let behavior = self.control.get();
        Box::pin(async move {
            match behavior {
                SimBehavior::Answer(r) => r,
                SimBehavior::Hang => futures::future::pending().await,
                SimBehavior::Delay(d, r) => {
                    tokio::time::sleep(d).await;
                    r
                }
            }
        })
    }
}
