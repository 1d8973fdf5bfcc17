//! Pretrained weights from the Hugging Face Hub through `hf-hub`: the standard cache layout
//! under HF_HOME, offline mode, an optional token, a configurable endpoint.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{HubProblem, ModelError, Result};

/// Where a checkpoint comes from and how to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubWeights {
    /// Repository id, e.g. `timm/resnet18.a1_in1k`.
    pub repo: String,
    /// Revision (branch, tag or commit).
    pub revision: String,
    /// File in the repository.
    pub file: String,
    /// Hub endpoint (default `https://huggingface.co`; `HF_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Cache folder (default `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Access token for gated or private repositories (`HF_TOKEN`; otherwise the cache's
    /// stored token, as `huggingface-cli login` writes it).
    pub token: Option<String>,
    /// Never touch the network: the file must be in the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubWeights {
    /// timm's ImageNet ResNet18 (`timm/resnet18.a1_in1k`, `model.safetensors`), the CLASS-M
    /// encoders' initialisation.
    pub fn resnet18() -> Self {
        HubWeights {
            repo: "timm/resnet18.a1_in1k".into(),
            revision: "main".into(),
            file: "model.safetensors".into(),
            endpoint: None,
            cache_dir: None,
            token: None,
            offline: false,
        }
    }

    /// Fills unset fields from `HF_ENDPOINT`, `HF_HUB_CACHE` (else `HF_HOME`/hub), `HF_TOKEN`
    /// and `HF_HUB_OFFLINE`.
    pub fn with_env(self) -> Self {
        self.with_vars(|k| std::env::var(k).ok())
    }

    /// [`HubWeights::with_env`] over any source of variables (a configuration file, a test's
    /// map); empty values count as unset. Fields already set win.
    pub fn with_vars(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| lookup(k).filter(|v| !v.is_empty());
        self.endpoint = self.endpoint.or_else(|| var("HF_ENDPOINT"));
        self.cache_dir = self
            .cache_dir
            .or_else(|| var("HF_HUB_CACHE").map(PathBuf::from))
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")));
        self.token = self.token.or_else(|| var("HF_TOKEN"));
        self.offline |= var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
        self
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(d) => Cache::new(d.clone()),
            None => Cache::from_env(),
        }
    }

    fn repo_handle(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }

    fn error(&self, problem: HubProblem, detail: impl Into<String>) -> ModelError {
        ModelError::Hub {
            repo: self.repo.clone(),
            file: self.file.clone(),
            problem,
            detail: detail.into(),
        }
    }

    /// The local path of the file: from the cache if it is there (no network), otherwise
    /// downloaded into the cache first. Offline, a cache miss is [`HubProblem::NotCached`].
    pub fn fetch(&self) -> Result<PathBuf> {
        let cache = self.cache();
        if let Some(p) = cache.repo(self.repo_handle()).get(&self.file) {
            return Ok(p);
        }
        if self.offline {
            return Err(self.error(
                HubProblem::NotCached,
                format!("looked in {}", cache.path().display()),
            ));
        }
        let mut b = ApiBuilder::from_cache(cache)
            .with_progress(false)
            .with_retries(0);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e.trim_end_matches('/').to_string());
        }
        if self.token.is_some() {
            b = b.with_token(self.token.clone());
        }
        let api = b
            .build()
            .map_err(|e| self.error(HubProblem::Network, e.to_string()))?;
        api.repo(self.repo_handle())
            .get(&self.file)
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, e: ApiError) -> ModelError {
        let ApiError::RequestError(boxed) = e else {
            return self.error(HubProblem::Network, e.to_string());
        };
        match *boxed {
            ureq::Error::Status(code, response) => {
                let tag = response.header("x-error-code").map(str::to_string);
                let message = response
                    .header("x-error-message")
                    .map(str::to_string)
                    .unwrap_or_default();
                let problem = match (code, tag.as_deref()) {
                    (_, Some("RepoNotFound")) => HubProblem::RepoNotFound,
                    (_, Some("EntryNotFound") | Some("RevisionNotFound")) => {
                        HubProblem::FileNotFound
                    }
                    (_, Some("GatedRepo")) | (401 | 403, _) => HubProblem::Gated,
                    (404, _) => HubProblem::FileNotFound,
                    _ => HubProblem::Network,
                };
                self.error(problem, format!("HTTP {code} {message}").trim().to_string())
            }
            other => self.error(HubProblem::Network, other.to_string()),
        }
    }
}
