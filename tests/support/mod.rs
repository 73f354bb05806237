pub mod cluster;
pub mod common;
pub mod pools;
pub mod redis_server;
