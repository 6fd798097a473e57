//! Set-up shared by the examples that run the tokio runtime.

/// Logs to stderr (stdout is the examples' output) at the level `RUST_LOG` names; `warn` if
/// unset. Colours only on a terminal: under Kubernetes stderr is merged into the JSON lines
/// of `kubectl logs`, where escape codes are noise.
pub(crate) fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
