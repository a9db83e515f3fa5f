//! One module per command group: build the request, call, print.

pub mod cert;
pub mod doctor;
pub mod events;
pub mod network;
pub mod node;
pub mod sandbox;
