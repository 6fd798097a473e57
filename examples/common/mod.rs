//! Set-up shared by the examples that run the tokio runtime.

/// Logs to stderr (stdout is the examples' output) at the level `RUST_LOG` names; `warn` if
/// unset.
pub(crate) fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
