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

/// `n` distinct ports free on 127.0.0.1 for both UDP and TCP, from `first` up and below Linux's
/// ephemeral range (32768 and up): a port the kernel picked with bind(0) and released could be
/// handed to an outgoing TCP connection before its node binds it (or while it is down).
#[allow(dead_code)] // for the examples that run many nodes on loopback; the others do not
pub(crate) fn free_ports(first: u16, n: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for port in first..32_000u16 {
        if ports.len() == n {
            break;
        }
        let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((udp, tcp));
        }
    }
    anyhow::ensure!(
        ports.len() == n,
        "only {} free ports below 32000",
        ports.len()
    );
    Ok(ports)
}
