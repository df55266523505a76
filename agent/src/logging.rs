//! The agent's log output: one `tracing` subscriber on stderr (journald keeps it), text or
//! JSON, whose filter a reload can replace.
//!
//! The filter is `log.level` from the config when set, else `TRIAD_LOG` from the environment,
//! else `info`; it uses `tracing`'s directive syntax (`info`, `warn,triad::raft=debug`).
//! [`set_level`] swaps it at run time (`systemctl reload triad` after editing `log.level`).
//!
//! Caveat: the format (text or JSON) is fixed at start.

use std::sync::OnceLock;

use tracing_subscriber::{reload, EnvFilter, Registry};

/// The installed filter's handle, for [`set_level`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Output format of the agent's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a filter, naming the problem (what `check-config` reports for `log.level`).
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("{level:?} is not a log filter ({e}); for example \"info\" or \"warn,triad::raft=debug\""))
}

/// Installs the subscriber with `level` (see the module docs for the fallbacks). Once per
/// process; a second call does nothing.
pub fn init(format: Format, level: Option<&str>) {
    use std::io::IsTerminal as _;
    let filter = level
        .and_then(|l| parse_level(l).ok())
        .or_else(|| EnvFilter::try_from_env("TRIAD_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter. `Err` when it does not parse or no subscriber is installed.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = parse_level(level)?;
    let handle = FILTER
        .get()
        .ok_or_else(|| "no log subscriber is installed".to_string())?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot replace the log filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_why() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("warn,triad::raft=debug").is_ok());
        let e = parse_level("triad=loud").expect_err("not a level");
        assert!(e.contains("\"triad=loud\" is not a log filter"), "{e}");
    }
}
