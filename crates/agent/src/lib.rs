//! The node agent: the kubelet role of Axle, one per Linux computer of the car.
//!
//! Today it makes its computer a Node of the car's API: it registers the Node (capacity from
//! the machine, addresses, node info, labels), renews a Lease in `kube-node-lease` so the
//! server knows it is alive, and reports itself Ready. Running pods comes next, through the
//! same loop. Like every Axle component it only talks to the API: what it knows it read from
//! the API, what it reports it wrote there.

mod containers;
mod endpoint;
mod exec;
mod images;
mod log_tail;
mod logs;
mod machine;
mod node;
mod pods;
mod port_forward;
mod prestage;
mod probes;
mod self_update;
mod spdy;
mod stats;
mod supervisor;

pub use logs::{memory_dir, LogStorage};
pub use node::{Agent, Config, Telemetry};
pub use self_update::SelfUpdate;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Api(#[from] client::ClientError),
    #[error("{0}")]
    Config(String),
}
