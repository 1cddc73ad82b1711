//! NATS JetStream: purge events in a file-backed stream, one durable pull consumer per
//! node with explicit acks; acknowledgements to the control plane on core NATS.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use tokio_stream::StreamExt;

use strata_wire::config::NatsAuth;

use crate::{
    BusError, Delivery, StreamPosition, ACK_SUBJECT_PREFIX, NODES_BUCKET, PURGES_BUCKET,
    PURGE_SUBJECT, RETENTION,
};

const STREAM: &str = "STRATA_PURGE";
/// The acknowledgements' stream, read by the control plane's durable consumer.
const ACK_STREAM: &str = "STRATA_PURGE_ACKS";
const ACK_CONSUMER: &str = "strata-control";
/// How long a JetStream request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle heartbeat of a node's pull requests: a pull held by a server that went down is
/// noticed after two missed heartbeats and made again on a live one.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one pull request lasts before the next replaces it.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long a purge is tried again while its publish fails (a server of the cluster went
/// down, the stream elects a new leader: seconds).
const PUBLISH_RETRY: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The node registry's bucket, once opened.
    nodes: Bucket,
    /// The purge records' bucket, once opened.
    records: Bucket,
    /// Edge KV's bucket, once opened.
    edge: Bucket,
}

impl NatsBus {
    /// Connects with `auth` (credentials, and the CA the server's certificate must chain
    /// to). A refusal (bad credentials, an unknown CA) is an error naming it.
    pub async fn connect(url: &str, auth: &NatsAuth) -> Result<Self, BusError> {
        // A cluster's servers, separated by commas: tried in turn.
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = options(url, auth)
            .await?
            .connect(servers.as_slice())
            .await
            .map_err(|e| BusError::Connect(format!("{}: {e}", crate::redacted(url))))?;
        let mut js = jetstream::new(client.clone());
        // An answer the cluster owes is late only when the server that had the request
        // went down: ask again soon (purges are published under a message id, so twice is
        // once).
        js.set_timeout(REQUEST_TIMEOUT);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.to_string(),
                subjects: vec![PURGE_SUBJECT.to_string()],
                storage: stream::StorageType::File,
                max_age: RETENTION,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        Ok(Self {
            client,
            js,
            stream,
            nodes: Bucket::default(),
            records: Bucket::default(),
            edge: Bucket::default(),
        })
    }

    /// The purge stream and the node registry (entries living `ttl` after their last
    /// refresh), each kept on `replicas` servers of the cluster: created when missing, and
    /// an existing one moved to `replicas` (JetStream re-replicates it in place).
    pub async fn provision(&self, ttl: Duration, replicas: usize) -> Result<(), BusError> {
        let err = |e: String| BusError::Connect(format!("provisioning the bus: {e}"));
        // Buckets as JetStream KV lays them out, made directly: async-nats's
        // `create_key_value` cannot read the answers of the nats-server 2.9 Debian ships.
        for (bucket, max_age) in [(NODES_BUCKET, ttl), (PURGES_BUCKET, RETENTION)] {
            self.js
                .get_or_create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age,
                    storage: stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        crate::kv::provision(&self.js).await?;
        self.js
            .get_or_create_stream(stream::Config {
                name: ACK_STREAM.to_string(),
                subjects: vec![format!("{ACK_SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                max_age: RETENTION,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        for (name, max_age) in [
            (STREAM.to_string(), RETENTION),
            (ACK_STREAM.to_string(), RETENTION),
            (format!("KV_{NODES_BUCKET}"), ttl),
            (format!("KV_{PURGES_BUCKET}"), RETENTION),
        ] {
            self.reconcile(&name, replicas, max_age).await?;
        }
        Ok(())
    }

    /// The control plane's durable consumer of acknowledgements.
    pub async fn ack_reader(&self) -> Result<AckReader, BusError> {
        let err = |e: String| BusError::Subscribe(format!("acknowledgements: {e}"));
        let stream = self
            .js
            .get_stream(ACK_STREAM)
            .await
            .map_err(|e| err(e.to_string()))?;
        let (_, messages) = durable(&stream, ACK_CONSUMER, consumer::pull::Config::default())
            .await
            .map_err(err)?;
        // Also as they are sent: no wait for the stream (or this consumer) to recover
        // while the cluster elects leaders. The same ack twice counts once.
        let live = self
            .client
            .subscribe(format!("{ACK_SUBJECT_PREFIX}.>"))
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(AckReader { messages, live })
    }

    /// Edge KV's bucket: made if missing (a node whose NATS user may not make it waits
    /// for the control plane to), opened once.
    pub(crate) async fn edge_kv(&self) -> Result<&jetstream::kv::Store, BusError> {
        if self.edge.0.get().is_none() {
            if let Err(e) = crate::kv::provision(&self.js).await {
                tracing::debug!(error = %e, "edge KV bucket not made here");
            }
        }
        self.edge
            .open(&self.js, crate::kv::EDGE_BUCKET)
            .await
            .map_err(BusError::Subscribe)
    }

    pub async fn put_record(&self, id: &str, payload: Bytes) -> Result<(), BusError> {
        self.records
            .open(&self.js, PURGES_BUCKET)
            .await
            .map_err(BusError::Publish)?
            .put(id, payload)
            .await
            .map(drop)
            .map_err(|e| BusError::Publish(format!("purge record {id}: {e}")))
    }

    pub async fn get_record(&self, id: &str) -> Result<Option<Bytes>, BusError> {
        self.records
            .open(&self.js, PURGES_BUCKET)
            .await
            .map_err(BusError::Subscribe)?
            .get(id)
            .await
            .map_err(|e| BusError::Subscribe(format!("purge record {id}: {e}")))
    }

    /// Brings an existing stream to `replicas` servers and `max_age` (a changed
    /// `stream_replicas` or `node_ttl` takes effect at the control plane's next start).
    async fn reconcile(
        &self,
        name: &str,
        replicas: usize,
        max_age: Duration,
    ) -> Result<(), BusError> {
        let err = |e: String| BusError::Connect(format!("stream {name}: {e}"));
        let mut stream = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let config = stream
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .config
            .clone();
        if config.num_replicas == replicas && config.max_age == max_age {
            return Ok(());
        }
        tracing::info!(
            stream = name,
            replicas,
            max_age = ?max_age,
            "updating a stream's replicas or retention"
        );
        self.js
            .update_stream(stream::Config {
                num_replicas: replicas,
                max_age,
                ..config
            })
            .await
            .map(drop)
            .map_err(|e| err(e.to_string()))
    }

    pub async fn announce(&self, node: &str, payload: Bytes) -> Result<Duration, BusError> {
        let err = |e: String| BusError::Publish(format!("node registry: {e}"));
        // Opened afresh each time (every third of the TTL): a TTL the control plane
        // changed is the one this node keeps to.
        let store = self
            .js
            .get_key_value(NODES_BUCKET)
            .await
            .map_err(|e| err(e.to_string()))?;
        store
            .put(node, payload)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(store.stream.cached_info().config.max_age)
    }

    pub async fn announced(&self) -> Result<Vec<(String, Bytes)>, BusError> {
        let err = |e: String| BusError::Subscribe(format!("node registry: {e}"));
        let store = self.nodes.open(&self.js, NODES_BUCKET).await.map_err(err)?;
        let mut keys = store.keys().await.map_err(|e| err(e.to_string()))?;
        let mut nodes = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| err(e.to_string()))?;
            if let Some(payload) = store.get(&key).await.map_err(|e| err(e.to_string()))? {
                nodes.push((key, payload));
            }
        }
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(nodes)
    }

    /// Whether the client is connected now (it reconnects by itself after a loss).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub async fn publish(&self, id: &str, payload: Bytes) -> Result<u64, BusError> {
        self.publish_durably(PURGE_SUBJECT, id, payload).await
    }

    /// Publishes to the stream that holds `subject`, tried again for [`PUBLISH_RETRY`]
    /// under `id` as message id; returns the stream sequence.
    pub async fn publish_durably(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<u64, BusError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY;
        let mut wait = Duration::from_millis(100);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            let attempt = async {
                self.js
                    .publish_with_headers(subject.to_string(), headers, payload.clone())
                    .await?
                    .await
            };
            match attempt.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, subject, retry_in = ?wait, "publishing; trying again");
                }
                Err(e) => return Err(BusError::Publish(e.to_string())),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    pub async fn consumer(&self, node: &str) -> Result<Consumer, BusError> {
        let name = crate::name_token(node);
        let config = consumer::pull::Config {
            // An event delivered to a node that then went away (its pull was still
            // registered) is redelivered after this; applying a purge twice is harmless.
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        };
        let (consumer, messages) = durable(&self.stream, &name, config.clone())
            .await
            .map_err(BusError::Subscribe)?;
        Ok(Consumer {
            messages,
            consumer,
            stream: self.stream.clone(),
            name,
            config,
            failures: 0,
        })
    }

    pub async fn publish_notice(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| BusError::Publish(e.to_string()))
    }

    pub async fn subscribe_notices(
        &self,
        subject: &str,
    ) -> Result<async_nats::Subscriber, BusError> {
        self.client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| BusError::Subscribe(e.to_string()))
    }
}

/// The durable pull consumer `name` of `stream` (explicit acks, from the stream's start,
/// the rest of `config` as given), and its messages pulled with [`PULL_EXPIRES`] and
/// [`PULL_HEARTBEAT`].
async fn durable(
    stream: &stream::Stream,
    name: &str,
    config: consumer::pull::Config,
) -> Result<(consumer::PullConsumer, consumer::pull::Stream), String> {
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                ..config
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let messages = consumer
        .stream()
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    Ok((consumer, messages))
}

/// The client's options for `auth`.
async fn options(url: &str, auth: &NatsAuth) -> Result<async_nats::ConnectOptions, BusError> {
    let fail = |what: &str, e: std::io::Error| BusError::Connect(format!("{what}: {e}"));
    let mut opts = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(10));
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.token {
        opts = opts.token(token.clone());
    }
    if let Some(creds) = &auth.creds_file {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| fail(&creds.display().to_string(), e))?;
    }
    if let Some(file) = &auth.nkey_file {
        let seed =
            std::fs::read_to_string(file).map_err(|e| fail(&file.display().to_string(), e))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(ca) = &auth.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&auth.cert_file, &auth.key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if auth.require_tls || auth.ca_file.is_some() || url.starts_with("tls://") {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// A KV bucket opened at its first use (one request for its stream's description) and
/// kept; one that does not exist yet is asked for again next time.
#[derive(Clone, Default)]
struct Bucket(std::sync::Arc<tokio::sync::OnceCell<jetstream::kv::Store>>);

impl Bucket {
    async fn open(
        &self,
        js: &jetstream::Context,
        name: &str,
    ) -> Result<&jetstream::kv::Store, String> {
        self.0
            .get_or_try_init(|| js.get_key_value(name))
            .await
            .map_err(|e| format!("{name}: {e}"))
    }
}

/// The control plane's reader of acknowledgements: the stream's durable consumer (those
/// sent while it was away) and a plain subscription (those sent now, at once).
pub struct AckReader {
    messages: consumer::pull::Stream,
    live: async_nats::Subscriber,
}

impl AckReader {
    /// The next acknowledgement: (the node its subject names, the payload). Acked to the
    /// stream as it is handed over.
    pub async fn next(&mut self) -> Option<(String, Bytes)> {
        let node_of = |subject: &str| {
            subject
                .strip_prefix(ACK_SUBJECT_PREFIX)
                .and_then(|rest| rest.strip_prefix('.'))
                .map(String::from)
        };
        loop {
            let stored = tokio::select! {
                biased;
                live = self.live.next() => {
                    let msg = live?;
                    match node_of(msg.subject.as_str()) {
                        Some(node) => return Some((node, msg.payload)),
                        None => continue,
                    }
                }
                stored = self.messages.next() => stored?,
            };
            match stored {
                Ok(msg) => {
                    let node = node_of(msg.subject.as_str());
                    let payload = msg.payload.clone();
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(error = %e, "acknowledging an acknowledgement");
                    }
                    if let Some(node) = node {
                        return Some((node, payload));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "acknowledgement stream");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

pub struct Consumer {
    messages: consumer::pull::Stream,
    consumer: consumer::PullConsumer,
    stream: stream::Stream,
    name: String,
    config: consumer::pull::Config,
    /// Errors in a row from the pull (missed heartbeats): past [`RESUBSCRIBE_AFTER`], the
    /// consumer is looked up again and a new pull started.
    failures: u32,
}

/// Seen in the namespace deployment test: after a NATS server was killed, one node's pull
/// went on missing heartbeats for over a minute while the others' consumers had new
/// leaders within seconds. A fresh lookup and a fresh pull (new inbox, sent to whichever
/// server leads the consumer now) after this many errors in a row (about 6 s).
const RESUBSCRIBE_AFTER: u32 = 3;

impl Consumer {
    pub async fn position(&mut self) -> Result<StreamPosition, BusError> {
        let err = |e: String| BusError::Subscribe(format!("purge stream position: {e}"));
        let stream = self
            .stream
            .get_info()
            .await
            .map_err(|e| err(e.to_string()))?;
        let consumer = self.consumer.info().await.map_err(|e| err(e.to_string()))?;
        Ok(StreamPosition {
            first: stream.state.first_sequence,
            last: stream.state.last_sequence,
            acked: consumer.ack_floor.stream_sequence,
            durable: true,
        })
    }

    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        match self.messages.next().await? {
            Ok(msg) => {
                self.failures = 0;
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                Some(Ok(Delivery::nats(seq, msg)))
            }
            Err(e) => {
                self.failures += 1;
                if self.failures < RESUBSCRIBE_AFTER {
                    return Some(Err(BusError::Subscribe(e.to_string())));
                }
                self.failures = 0;
                match durable(&self.stream, &self.name, self.config.clone()).await {
                    Ok((consumer, messages)) => {
                        self.consumer = consumer;
                        self.messages = messages;
                        Some(Err(BusError::Subscribe(format!("{e}; pull started again"))))
                    }
                    Err(again) => Some(Err(BusError::Subscribe(format!(
                        "{e}; starting the pull again: {again}"
                    )))),
                }
            }
        }
    }
}
