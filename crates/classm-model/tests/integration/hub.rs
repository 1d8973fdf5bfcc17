//! The Hub loading code against a loopback server that answers like the Hugging Face Hub
//! (`/{repo}/resolve/{revision}/{file}` with ETag, X-Repo-Commit, ranges and X-Error-Code).
//! No test touches the network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{
    HubProblem, HubWeights, ModelError, ResNet, ResNetConfig, load_resnet, read_safetensors,
};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A mock Hub on 127.0.0.1: serves `timm/tiny` and the gated `timm/gated` (token `good`).
struct MockHub {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

fn respond(
    stream: &mut std::net::TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn serve(file: Vec<u8>) -> MockHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let err = |s: &mut std::net::TcpStream, status: &str, code: &str| {
                respond(
                    s,
                    status,
                    &[
                        ("X-Error-Code", code.into()),
                        ("X-Error-Message", format!("{code} (mock)")),
                    ],
                    b"",
                )
            };
            let authorised = headers
                .get("authorization")
                .is_some_and(|a| a == "Bearer good");
            match path.as_str() {
                "/timm/tiny/resolve/main/model.safetensors" => {}
                "/timm/gated/resolve/main/model.safetensors" if authorised => {}
                "/timm/gated/resolve/main/model.safetensors" => {
                    err(&mut stream, "401 Unauthorized", "GatedRepo");
                    continue;
                }
                p if p.starts_with("/timm/tiny/") => {
                    err(&mut stream, "404 Not Found", "EntryNotFound");
                    continue;
                }
                _ => {
                    err(&mut stream, "404 Not Found", "RepoNotFound");
                    continue;
                }
            }
            let n = file.len();
            let start: usize = headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end = match headers.get("range").map(|r| r.ends_with('-')) {
                Some(false) => start, // bytes=0-0
                _ => n - 1,
            };
            respond(
                &mut stream,
                "206 Partial Content",
                &[
                    ("ETag", "\"blob-etag-1\"".into()),
                    ("X-Repo-Commit", COMMIT.into()),
                    ("Content-Range", format!("bytes {start}-{end}/{n}")),
                ],
                &file[start..=end],
            );
        }
    });
    MockHub { endpoint, requests }
}

fn checkpoint_bytes() -> Vec<u8> {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let cfg = ResNetConfig {
        depth: 18,
        width: 4,
        in_channels: 3,
    };
    ResNet::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    let tensors: HashMap<String, Tensor> = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    candle_core::safetensors::save(&tensors, &p).unwrap();
    std::fs::read(p).unwrap()
}

fn source(hub: &MockHub, repo: &str, cache: &std::path::Path) -> HubWeights {
    HubWeights {
        repo: repo.into(),
        endpoint: Some(hub.endpoint.clone()),
        cache_dir: Some(cache.to_path_buf()),
        ..HubWeights::resnet18()
    }
}

#[test]
fn weights_download_into_the_hub_cache_and_then_load_offline() {
    let hub = serve(checkpoint_bytes());
    let cache = tempfile::tempdir().unwrap();
    let path = source(&hub, "timm/tiny", cache.path()).fetch().unwrap();
    assert!(
        path.ends_with(format!(
            "models--timm--tiny/snapshots/{COMMIT}/model.safetensors"
        )),
        "{}",
        path.display()
    );
    let ckpt = read_safetensors(&path).unwrap();
    let map = VarMap::new();
    let cfg = ResNetConfig {
        depth: 18,
        width: 4,
        in_channels: 1,
    };
    ResNet::new(
        cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu).pp("h"),
    )
    .unwrap();
    assert!(load_resnet(&map, "h.", &ckpt).unwrap().stem_summed);

    // Cached: no request, even with the Hub unreachable, and in offline mode.
    let before = hub.requests.load(Ordering::SeqCst);
    let dead = HubWeights {
        endpoint: Some("http://127.0.0.1:9".into()),
        ..source(&hub, "timm/tiny", cache.path())
    };
    assert_eq!(dead.fetch().unwrap(), path);
    let offline = HubWeights {
        offline: true,
        ..dead
    };
    assert_eq!(offline.fetch().unwrap(), path);
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
}

#[test]
fn hub_failures_are_typed() {
    let hub = serve(checkpoint_bytes());
    let cache = tempfile::tempdir().unwrap();
    let problem = |w: HubWeights| match w.fetch() {
        Err(ModelError::Hub { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        problem(source(&hub, "nobody/nothing", cache.path())),
        HubProblem::RepoNotFound
    );
    let other_file = HubWeights {
        file: "pytorch_model.bin".into(),
        ..source(&hub, "timm/tiny", cache.path())
    };
    assert_eq!(problem(other_file), HubProblem::FileNotFound);
    assert_eq!(
        problem(source(&hub, "timm/gated", cache.path())),
        HubProblem::Gated
    );
    let with_token = HubWeights {
        token: Some("good".into()),
        ..source(&hub, "timm/gated", cache.path())
    };
    assert!(with_token.fetch().is_ok());
    let offline = HubWeights {
        offline: true,
        ..source(&hub, "timm/tiny", cache.path())
    };
    assert_eq!(problem(offline), HubProblem::NotCached);
    let unreachable = HubWeights {
        endpoint: Some("http://127.0.0.1:9".into()),
        ..source(&hub, "timm/tiny", cache.path())
    };
    assert_eq!(problem(unreachable), HubProblem::Network);
    let msg = problem_message(source(&hub, "nobody/nothing", cache.path()));
    assert!(
        msg.contains("nobody/nothing") && msg.contains("repository not found"),
        "{msg}"
    );
}

fn problem_message(w: HubWeights) -> String {
    w.fetch().unwrap_err().to_string()
}

#[test]
fn hub_settings_come_from_environment_variables() {
    let hub = serve(checkpoint_bytes());
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().display().to_string();
    let vars = |pairs: &[(&str, &str)]| {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    };
    let base = HubWeights {
        repo: "timm/gated".into(),
        ..HubWeights::resnet18()
    };
    let w = base.clone().with_vars(vars(&[
        ("HF_ENDPOINT", &hub.endpoint),
        ("HF_HOME", &home_s),
        ("HF_TOKEN", "good"),
    ]));
    assert_eq!(w.endpoint.as_deref(), Some(hub.endpoint.as_str()));
    assert_eq!(w.cache_dir, Some(home.path().join("hub")));
    // The gated repository opens with the token from the environment.
    let path = w.fetch().unwrap();
    assert!(
        path.starts_with(home.path().join("hub")),
        "{}",
        path.display()
    );

    // HF_HUB_CACHE wins over HF_HOME, an empty value is unset, a field already set wins.
    let w = base.clone().with_vars(vars(&[
        ("HF_HUB_CACHE", "/c"),
        ("HF_HOME", "/h"),
        ("HF_TOKEN", ""),
    ]));
    assert_eq!(w.cache_dir, Some(std::path::PathBuf::from("/c")));
    assert_eq!(w.token, None);
    let explicit = HubWeights {
        endpoint: Some("http://x".into()),
        ..base.clone()
    }
    .with_vars(vars(&[("HF_ENDPOINT", "http://y")]));
    assert_eq!(explicit.endpoint.as_deref(), Some("http://x"));

    // HF_HUB_OFFLINE: served from the cache filled above without a request.
    let before = hub.requests.load(Ordering::SeqCst);
    let offline = base.with_vars(vars(&[
        ("HF_ENDPOINT", &hub.endpoint),
        ("HF_HOME", &home_s),
        ("HF_HUB_OFFLINE", "1"),
    ]));
    assert!(offline.offline);
    assert_eq!(offline.fetch().unwrap(), path);
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
}
