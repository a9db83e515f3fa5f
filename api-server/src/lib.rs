//! berth-api: validates requests, keeps every piece of cluster state in etcd,
//! allocates subnets, addresses and VNIs with transactions, and (with the node
//! agent) drives the nodes.
pub mod access;
pub mod agents;
pub mod config;
pub mod error;
pub mod events;
pub mod grpc;
pub mod ipam;
pub mod metrics;
pub mod networks;
pub mod nodes;
pub mod overlay;
pub mod page;
pub mod repair;
pub mod sandboxes;
pub mod server;
pub mod store;
pub mod tls;
pub mod tooling;
pub mod unix_authority;
