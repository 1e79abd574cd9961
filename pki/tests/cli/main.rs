//! Integration tests: the `autoprov` binary driven in temporary directories, its output checked
//! with OpenSSL and rustls-webpki, its inventory with SQLite.

mod ca;
mod cloud;
mod concurrency;
mod demo;
mod errors;
mod issue;
mod lifecycle;
mod util;
