//! A resolver the test controls, for the worker's `Config::resolver`.

use postbox_worker::resolve::BoxFuture;
use postbox_worker::Resolve;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Name → answers; each lookup takes the next answer, the last one repeats.
#[derive(Default)]
pub struct TestResolver {
    map: Mutex<HashMap<String, Vec<Vec<IpAddr>>>>,
    pub lookups: AtomicU64,
}

impl TestResolver {
    pub fn set(&self, name: &str, answers: Vec<Vec<IpAddr>>) {
        self.map.lock().unwrap().insert(name.to_string(), answers);
    }
}

impl Resolve for TestResolver {
    fn lookup(&self, host: String) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap();
        let answer = match map.get_mut(&host) {
            Some(answers) if answers.len() > 1 => Ok(answers.remove(0)),
            Some(answers) => Ok(answers[0].clone()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("test resolver: no such host {host}"),
            )),
        };
        Box::pin(async move { answer })
    }
}
