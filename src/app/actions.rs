//! The action layer of a running process: channel workers, the responder
//! (or the handler a test gives), the scheduler of approvals and paging,
//! and the dispatcher with its executor lane on a thread of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::AppError;
use super::journal::Journals;
use crate::action::deliver::Deliverer;
use crate::action::links::LinkSigner;
use crate::action::responder::Responder;
use crate::action::scheduler::Scheduler;
use crate::action::{Dispatcher, Handler, LaneJournal};
use crate::journal::SharedJournal;
use crate::output::Output;
use crate::settings::Config;
use crate::silence::Guard;
use crate::telemetry::Metrics;
use crate::time::Clock;

/// Rollbacks and pauses running at once (their own lane: messages never
/// take these slots).
const EXECUTOR_SLOTS: usize = 16;
/// Messages being handed to channels at once; a queued one frees its slot.
const MESSAGE_SLOTS: usize = 64;

/// What the action layer shares with the rest of the process.
pub struct Actions {
    /// The dispatcher's, the responder's and the scheduler's connection.
    shared: SharedJournal,
    /// The executor lane's own connection: a rollback's claim, admission
    /// and outcome never queue behind a flood of message bookkeeping.
    executor_journal: SharedJournal,
    pub deliverer: Deliverer,
    pub links: Option<LinkSigner>,
    pub silences: Arc<Guard>,
    handler: Arc<dyn Handler>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// The dispatcher, running.
pub struct Dispatching {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// Runs the executor lane until dropped (after the dispatcher stops).
    _lane: LaneThread,
}

/// What every part of the action layer is built from.
pub struct Parts<'a> {
    pub cfg: &'a Config,
    pub clock: Arc<dyn Clock>,
    pub journals: &'a Journals,
    pub metrics: Arc<Metrics>,
    /// Wakes the dispatcher (new actions, an approval).
    pub notify: Arc<Notify>,
    pub output: &'a Arc<Output>,
    pub owner: &'a str,
    /// Where the responder submits what it finds (verification results).
    pub findings: crate::pipeline::input::Submit,
}

/// What the dispatcher is built from besides the action layer.
pub struct DispatchParts<'a> {
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub notify: Arc<Notify>,
    pub output: &'a Arc<Output>,
    pub owner: &'a str,
}

impl Actions {
    /// Starts the channel workers, the responder (unless `handler` is
    /// given) and the scheduler.
    pub fn start(p: Parts<'_>, handler: Option<Arc<dyn Handler>>) -> Result<Actions, AppError> {
        let cfg = p.cfg;
        let shared = p.journals.shared()?;
        let (stop, stopped) = watch::channel(false);
        let http_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AppError::Pipeline(format!("http client: {e}")))?;
        let (deliverer, mut tasks) = Deliverer::start(
            cfg.actions.channels.iter().cloned(),
            http_client,
            p.clock.clone(),
            (&shared).into(),
            p.metrics.clone(),
            stopped.clone(),
        );
        let links = match (&cfg.actions.approvals.link_secret, &cfg.http.public_url) {
            (Some(key), Some(base)) => Some(LinkSigner::new(
                key.clone(),
                base.clone(),
                cfg.actions.approvals.expire_after,
            )),
            _ => None,
        };
        let silences = Arc::new(Guard::new(
            cfg.silences.windows.clone(),
            cfg.silences.limits,
            cfg.engine.budgets.silences.clone(),
        ));
        let executor_journal: SharedJournal = Arc::new(std::sync::Mutex::new({
            let mut j = p.journals.part()?;
            j.prefer_writes();
            j
        }));
        let handler: Arc<dyn Handler> = match handler {
            Some(h) => h,
            None => {
                let responder = Responder {
                    journal: (&shared).into(),
                    deliverer: deliverer.clone(),
                    cfg: cfg.actions.clone(),
                    clock: p.clock.clone(),
                    links: links.clone(),
                    wake: p.notify.clone(),
                    metrics: p.metrics.clone(),
                    silences: silences.clone(),
                    findings: Some(p.findings),
                };
                let executors = Arc::new(Responder {
                    journal: (&executor_journal).into(),
                    ..responder.clone()
                });
                let messages = Arc::new(responder);
                tasks.push(tokio::spawn(
                    messages.clone().verification_loop(stopped.clone()),
                ));
                Arc::new(crate::action::ByLane {
                    executors,
                    messages,
                })
            }
        };
        let scheduler = Scheduler {
            work: (&shared).into(),
            reads: (&shared).into(),
            silence_journal: (&shared).into(),
            deliverer: deliverer.clone(),
            cfg: cfg.actions.clone(),
            clock: p.clock.clone(),
            links: links.clone(),
            wake: p.notify.clone(),
            owner: p.owner.to_owned(),
            output: Some(p.output.clone()),
            silences: silences.clone(),
        };
        tasks.push(tokio::spawn(scheduler.run(stopped)));
        Ok(Actions {
            shared,
            executor_journal,
            deliverer,
            links,
            silences,
            handler,
            tasks,
            stop,
        })
    }

    /// Starts the dispatcher; its executor lane on a thread of its own.
    pub fn dispatch(&self, p: DispatchParts<'_>, grace: Duration) -> Result<Dispatching, AppError> {
        let lane = LaneThread::start("ripcord-executors")?;
        let (stop, stopped) = watch::channel(false);
        let dispatcher = Dispatcher {
            journal: lane_journal(&self.shared),
            executor_journal: lane_journal(&self.executor_journal),
            handler: self.handler.clone(),
            notify: p.notify,
            owner: p.owner.to_owned(),
            metrics: p.metrics,
            executor_slots: EXECUTOR_SLOTS,
            message_slots: MESSAGE_SLOTS,
            output: Some(p.output.clone()),
            silences: self.silences.clone(),
            clock: p.clock,
            executor_runtime: Some(lane.handle.clone()),
        };
        Ok(Dispatching {
            task: tokio::spawn(dispatcher.run(stopped, grace)),
            stop,
            _lane: lane,
        })
    }

    /// Stops the scheduler, the verification loop and the channel workers;
    /// messages already handed to channels get `left`.
    pub async fn stop(self, left: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(left, async {
            for t in self.tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

impl Dispatching {
    /// Lets running actions finish, within `left`.
    pub async fn stop(self, left: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(left, self.task).await;
    }
}

/// The dispatcher's roles of one connection.
fn lane_journal(j: &SharedJournal) -> LaneJournal {
    LaneJournal {
        work: j.into(),
        silences: j.into(),
    }
}

/// A runtime on a thread of its own, for one dispatcher lane: under a storm
/// of alerts the shared runtime's queues are full of message work, and the
/// OS schedules this thread beside it instead of behind it. It runs until
/// dropped, then gives what still runs a second.
struct LaneThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LaneThread {
    fn start(name: &str) -> Result<LaneThread, AppError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build()
            .map_err(AppError::ExecutorThread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A dropped sender ends it too.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(AppError::ExecutorThread)?;
        Ok(LaneThread {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for LaneThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
