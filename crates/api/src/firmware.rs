//! How a firmware pod (an ECU node's pod, `runtimeClassName: ecu`) reports a flash in
//! progress: its container waits with reason `Flashing` and a message that carries the bytes
//! sent. The ECU gateway writes it; the server's metrics read it.

/// The waiting reason of a firmware pod being flashed.
pub const FLASHING: &str = "Flashing";

/// The message of a flash in progress.
pub fn progress_message(sent: u64, total: u64) -> String {
    format!("flashing: {sent}/{total} bytes")
}

/// (sent, total) from a progress message.
pub fn parse_progress(message: &str) -> Option<(u64, u64)> {
    let (sent, total) = message.strip_prefix("flashing: ")?.strip_suffix(" bytes")?.split_once('/')?;
    Some((sent.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips() {
        assert_eq!(parse_progress(&progress_message(512, 4096)), Some((512, 4096)));
        assert_eq!(parse_progress("flashing: RequestDownload"), None);
    }
}
