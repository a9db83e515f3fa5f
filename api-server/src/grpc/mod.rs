//! The gRPC edge: service implementations that turn proto requests into
//! domain calls and records back into proto messages.
pub mod convert;
pub mod doctor;
pub mod local;
pub mod network;
pub mod node;
pub mod page;
pub mod sandbox;
