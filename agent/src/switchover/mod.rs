//! Planned switchovers: an operator moves a service's authority to another node without losing
//! an acknowledged write. One module per service: [`redis`] and [`galera`] (the writer). Each is an adapter run by the
//! agent that received the request; the API only parses the request and answers. Beside them,
//! [`failover`] is the operator's forced Redis failover, for a master that is already broken.

pub mod failover;
pub mod galera;
pub mod redis;
