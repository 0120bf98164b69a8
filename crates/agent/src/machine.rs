//! Facts about the machine the agent runs on, for the Node's capacity and node info.

use std::net::{IpAddr, UdpSocket};

/// What the Node object says about this computer.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub memory_kib: u64,
    pub os_image: String,
    pub kernel_version: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Machine {
    pub fn probe() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os_image = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_kib,
            os_image,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// The local address this machine uses to reach `server` (host:port): the address the car's
/// other computers reach this node at.
pub fn address_towards(server: &str) -> Option<IpAddr> {
    let authority = server.split("://").nth(1).unwrap_or(server).split('/').next()?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(authority).ok()?.next()?;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).ok()?;
    // A UDP "connect" sends nothing; it only makes the kernel pick the route and source address.
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_the_machine() {
        let m = Machine::probe();
        assert!(m.cpus >= 1);
        assert!(m.memory_kib > 0);
        assert!(!m.kernel_version.is_empty());
    }

    #[test]
    fn address_towards_loopback_is_loopback() {
        assert_eq!(address_towards("http://127.0.0.1:6443"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(address_towards("not a url"), None);
    }
}
