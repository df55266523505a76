//! Triad: the agent that keeps a three-node web-shop cluster alive.
//!
//! Module map (see README "Architecture"):
//! - pure core: [`cluster`] (replicated state machine), [`decide`] (decision policy),
//!   [`health`] (reports), [`observation`] (what probes observe, as values), [`ids`]
//!   (newtypes);
//! - adapters: [`raft`] (raft-rs driver, redb storage, peer transport), [`api`] (HTTP),
//!   [`metrics`], [`codec`] (encodings at the edge), [`config`], [`pace`] (periodic timers on
//!   one grid), [`backup`] (the backup runner: restic, mariadb-backup, redis-cli), [`tls`]
//!   (the cluster CA, node certificates and mutual TLS between agents), [`reload`] (SIGHUP:
//!   token and certificates without a restart), [`ratelimit`] (token buckets of the API's
//!   mutating endpoints), [`helper_unit`] (root-only commands as fixed oneshot systemd units
//!   the unprivileged agent starts), [`secret`] (the owner-only rule for secret files),
//!   [`logging`] (the log subscriber and its reloadable filter);
//! - reconciliation: [`reconcile`] (drives the local Redis and HAProxy to the committed state
//!   through the [`actuator`] traits);
//! - wiring: [`driver`] (the clock-free core the agent and the simulation both step),
//!   [`node`] (the tokio shell around it: the one event loop); [`cli`] (the `triad` command).

pub mod actuator;
pub mod api;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod controller;
pub mod decide;
pub mod driver;
pub mod health;
pub mod helper_unit;
pub mod hooks;
pub mod ids;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod observation;
pub mod observe;
pub mod pace;
pub mod probe;
pub mod raft;
pub mod ratelimit;
pub mod reconcile;
pub mod reload;
pub mod secret;
pub mod status;
pub mod switchover;
pub mod tls;
