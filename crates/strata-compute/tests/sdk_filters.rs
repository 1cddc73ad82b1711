//! The example filters (`examples/filters`, built with the proxy-wasm Rust SDK for
//! wasm32-wasip1 by `scripts/test.sh`) through the host, unmodified.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use strata_compute::{
    Callout, CalloutResponse, Callouts, Filter, Limits, MemoryShared, Runtime, SharedData, Spec,
    Verdict,
};

fn wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/filters/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example filters first (scripts/test.sh does: cargo build \
             --release --target wasm32-wasip1 --manifest-path examples/filters/Cargo.toml)",
            path.display()
        )
    })
}

struct NoCallouts;

impl Callouts for NoCallouts {
    fn call(
        &self,
        _: Callout,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send + '_>> {
        Box::pin(async { Err("none".to_string()) })
    }
}

fn load(name: &str, config: &str, shared: Arc<dyn SharedData>) -> Arc<Filter> {
    let rt = Arc::new(Runtime::new(Limits::default()).unwrap());
    let module = wasm(name);
    Arc::new(
        Filter::load(
            &rt,
            Spec {
                name,
                wasm: &module,
                sha256: None,
                config: config.as_bytes(),
                shared,
            },
        )
        .unwrap(),
    )
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn get<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

#[tokio::test]
async fn header_rewrite_changes_request_and_response_headers_and_the_path() {
    let filter = load(
        "header_rewrite",
        "request.set x-from-edge yes\nrequest.remove cookie\nrequest.path /old/ /new/\n\
         response.set x-frame-options DENY\nresponse.remove server\n",
        Arc::new(MemoryShared::default()),
    );
    let mut stream = filter.stream(Box::new(HashMap::new())).unwrap();
    let request = pairs(&[
        (":method", "GET"),
        (":path", "/old/a.css?v=1"),
        ("cookie", "secret"),
    ]);
    let Ok(Verdict::Continue(Some(request))) =
        stream.request_headers(request, true, &NoCallouts).await
    else {
        panic!("request phase")
    };
    assert_eq!(get(&request, ":path"), Some("/new/a.css?v=1"));
    assert_eq!(get(&request, "x-from-edge"), Some("yes"));
    assert_eq!(get(&request, "cookie"), None);
    let response = pairs(&[(":status", "200"), ("server", "origin/1.0")]);
    let Ok(Verdict::Continue(Some(response))) =
        stream.response_headers(response, false, &NoCallouts).await
    else {
        panic!("response phase")
    };
    assert_eq!(get(&response, "x-frame-options"), Some("DENY"));
    assert_eq!(get(&response, "server"), None);
    drop(stream);
    // The instance went back warm and serves the next request.
    assert_eq!(filter.idle(), 1);
    assert_eq!(
        filter
            .stats()
            .instantiated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_configuration_the_filter_refuses_is_a_load_error() {
    let rt = Arc::new(Runtime::new(Limits::default()).unwrap());
    let module = wasm("header_rewrite");
    let refused = Filter::load(
        &rt,
        Spec {
            name: "header_rewrite",
            wasm: &module,
            sha256: None,
            config: b"request.frobnicate x",
            shared: Arc::new(MemoryShared::default()),
        },
    );
    assert!(refused.is_err());
}

#[tokio::test]
async fn geo_redirect_sends_listed_countries_elsewhere_and_lets_the_rest_through() {
    let filter = load(
        "geo_redirect",
        "DE https://de.example.com/\n",
        Arc::new(MemoryShared::default()),
    );
    let request = pairs(&[(":method", "GET"), (":path", "/shop?x=1")]);
    let mut props = HashMap::new();
    props.insert("strata.country".to_string(), b"DE".to_vec());
    let mut stream = filter.stream(Box::new(props)).unwrap();
    match stream
        .request_headers(request.clone(), true, &NoCallouts)
        .await
    {
        Ok(Verdict::Respond(local)) => {
            assert_eq!(local.status, 302);
            assert_eq!(
                get(&local.headers, "location"),
                Some("https://de.example.com/shop?x=1")
            );
        }
        other => panic!("{other:?}"),
    }
    drop(stream);
    let mut props = HashMap::new();
    props.insert("strata.country".to_string(), b"FR".to_vec());
    let mut stream = filter.stream(Box::new(props)).unwrap();
    assert!(matches!(
        stream
            .request_headers(request.clone(), true, &NoCallouts)
            .await,
        Ok(Verdict::Continue(_))
    ));
    drop(stream);
    let mut stream = filter.stream(Box::new(HashMap::new())).unwrap();
    assert!(matches!(
        stream.request_headers(request, true, &NoCallouts).await,
        Ok(Verdict::Continue(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counter_loses_no_increment_under_concurrent_requests() {
    let shared: Arc<dyn SharedData> = Arc::new(MemoryShared::default());
    let filter = load("kv_counter", "", Arc::clone(&shared));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let filter = Arc::clone(&filter);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..50 {
                let mut stream = filter.stream(Box::new(HashMap::new())).unwrap();
                let request = pairs(&[(":method", "GET"), (":path", "/counted?q=1")]);
                // The counter reads the path and changes nothing of the request.
                let Ok(Verdict::Continue(None)) =
                    stream.request_headers(request, true, &NoCallouts).await
                else {
                    panic!("request phase")
                };
                let response = pairs(&[(":status", "200")]);
                let Ok(Verdict::Continue(Some(response))) =
                    stream.response_headers(response, false, &NoCallouts).await
                else {
                    panic!("response phase")
                };
                seen.push(get(&response, "x-hits").unwrap().parse::<u64>().unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    // Every request saw a count of its own: 1..=400, none lost, none twice.
    assert_eq!(all, (1..=400).collect::<Vec<u64>>());
    assert_eq!(shared.get("hits:/counted").unwrap().0, b"400");
}
