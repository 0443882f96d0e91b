//! What a binary (the worker's, the API's) does before its work.

/// The log (JSON lines or text, through the filter `log`), then the runtime.
pub fn start_process(log: &str, json: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::new(log);
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tokio::runtime::Runtime::new()
}
