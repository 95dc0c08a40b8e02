-- conveyor SQLite schema, version 13. Applied once per file inside BEGIN IMMEDIATE.
CREATE TABLE IF NOT EXISTS conveyor_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- seq is the rowid: FIFO order within a priority, and the cheapest key to update by.
CREATE TABLE IF NOT EXISTS jobs (
  seq              INTEGER PRIMARY KEY,
  id               TEXT NOT NULL UNIQUE,
  queue            TEXT NOT NULL,
  task             TEXT NOT NULL,
  payload          TEXT NOT NULL,
  priority         INTEGER NOT NULL,
  status           TEXT NOT NULL,
  attempt          INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  stalls           INTEGER NOT NULL DEFAULT 0,
  max_stalls       INTEGER NOT NULL,
  timeout          REAL,
  lease            REAL NOT NULL,
  progress         TEXT,
  result           TEXT,
  error            TEXT,
  tenant           TEXT,
  batch            TEXT,
  workflow         TEXT,
  parent           TEXT,
  idempotency_key  TEXT,
  created_at       REAL NOT NULL,
  scheduled_for    REAL,
  started_at       REAL,
  finished_at      REAL,
  lease_expires_at REAL,
  worker           TEXT,
  flow             TEXT,  -- flow control: JSON array of the gate names the job must pass
  -- token: the claim token, +1 per claim, never lowered. meta: the job's meta (a JSON object;
  -- NULL: none). cost: admin-only, {unit: total} that ctx.cost reported over its attempts.
  token            INTEGER NOT NULL DEFAULT 0,
  meta             TEXT,
  cost             TEXT,
  step             TEXT,     -- chains: the step label (NULL: the task's name)
  steps            INTEGER,  -- chains: the number of steps the workflow declares
  next_jobs        TEXT,     -- JSON array: the ids of the jobs created with its outcome
  prompt           TEXT,
  await_deadline   REAL,
  on_timeout       TEXT,
  await_data       TEXT,
  input            TEXT,
  resumes          INTEGER NOT NULL DEFAULT 0,
  fanin            TEXT      -- fan-in parent: JSON {policy, cancel_siblings, total, settled, failed, waiting}
);
-- The claim path: ready unlimited jobs of a queue, highest priority first, then FIFO. O(log n).
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, seq)
  WHERE status = 'queued' AND flow IS NULL;
-- Ready jobs of one flow (flow-controlled), in claim order.
CREATE INDEX IF NOT EXISTS jobs_flow ON jobs (queue, flow, priority DESC, seq)
  WHERE status = 'queued' AND flow IS NOT NULL;
-- Promotion of due delayed/backoff jobs.
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (scheduled_for) WHERE status = 'scheduled';
-- Recovery of expired leases.
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE status = 'active';
-- Cancelled attempts still running: they hold their gates' slots until they end or expire.
CREATE INDEX IF NOT EXISTS jobs_held ON jobs (lease_expires_at)
  WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL;
-- Human in the loop (conveyor.AwaitInput), jobs columns prompt .. resumes: the last await's
-- prompt (JSON), its deadline while awaiting (NULL: none), on_timeout (fail, cancel or resume)
-- and the data a timeout resumes with (JSON); the last resume's decision (input, JSON) and how
-- many resumes there were. (Not inside CREATE TABLE: ALTER TABLE DROP COLUMN trips on it.)
-- Awaiting jobs: listed newest first (list_jobs(status=awaiting)), and swept by deadline
-- (expire_awaiting reads the expired ones only).
CREATE INDEX IF NOT EXISTS jobs_awaiting ON jobs (seq) WHERE status = 'awaiting';
CREATE INDEX IF NOT EXISTS jobs_await_due ON jobs (await_deadline)
  WHERE status = 'awaiting' AND await_deadline IS NOT NULL;
-- Retention and cleanup of finished jobs (finished_at is set only in final states).
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (queue, status, finished_at) WHERE finished_at IS NOT NULL;
-- Idempotency keys are unique per (queue, tenant); '' stands for no tenant (tenants are non-empty).
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (queue, ifnull(tenant, ''), idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- Listing a tenant's jobs, newest first (the HTTP API's every listing): no scan of other tenants'.
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, seq) WHERE tenant IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch) WHERE batch IS NOT NULL;
-- Listing (and counting) the jobs of one task or one queue, newest first (the dashboard's
-- filters, bulk actions): a rare or absent value answers from the index, not a scan of the table.
-- Both columns never change after insert: only enqueue and delete pay for them.
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (task, seq);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (queue, seq);
-- A workflow's steps in creation order (app.workflow): the root job is found by its id.
CREATE INDEX IF NOT EXISTS jobs_workflow ON jobs (workflow, seq) WHERE workflow IS NOT NULL;

-- AUTOINCREMENT: ids never repeat, even after trimming empties the log (SSE resume points).
CREATE TABLE IF NOT EXISTS events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  type    TEXT NOT NULL,
  job_id  TEXT,
  queue   TEXT,
  task    TEXT,
  tenant  TEXT,
  time    REAL NOT NULL,
  data    TEXT
);
-- Filtered reads of the log (events(queue=, tenant=, job_id=)) walk one of these, never the
-- whole log. conveyor_meta 'events_trimmed' holds the highest id retention deleted.
CREATE INDEX IF NOT EXISTS events_queue ON events (queue, id) WHERE queue IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_tenant ON events (tenant, id) WHERE tenant IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id) WHERE job_id IS NOT NULL;

-- Admin-only: what ctx.cost reported, summed per (queue, task, unit) as attempts end.
CREATE TABLE IF NOT EXISTS costs (
  queue TEXT NOT NULL,
  task  TEXT NOT NULL,
  unit  TEXT NOT NULL,
  total REAL NOT NULL,
  PRIMARY KEY (queue, task, unit)
) WITHOUT ROWID;

-- Counts by state per queue, kept in the same transaction as every transition: stats are O(1).
CREATE TABLE IF NOT EXISTS counts (
  queue  TEXT NOT NULL,
  status TEXT NOT NULL,
  n      INTEGER NOT NULL,
  PRIMARY KEY (queue, status)
) WITHOUT ROWID;

-- Completions per queue in 10-second buckets: throughput and average run time, O(1).
CREATE TABLE IF NOT EXISTS rates (
  queue       TEXT NOT NULL,
  bucket      INTEGER NOT NULL,
  completed   INTEGER NOT NULL,
  failed      INTEGER NOT NULL,
  run_seconds REAL NOT NULL,
  PRIMARY KEY (queue, bucket)
) WITHOUT ROWID;

-- Live workers: a row lives until seen_at + ttl (deleted by the next heartbeat after that).
CREATE TABLE IF NOT EXISTS workers (
  id          TEXT PRIMARY KEY,
  queues      TEXT NOT NULL,
  concurrency INTEGER NOT NULL,
  active      INTEGER NOT NULL,
  pid         INTEGER NOT NULL,
  host        TEXT NOT NULL,
  started_at  REAL NOT NULL,
  seen_at     REAL NOT NULL,
  ttl         REAL NOT NULL,
  running     TEXT NOT NULL DEFAULT '[]',  -- JSON array of the job ids it holds
  processed   INTEGER NOT NULL DEFAULT 0,
  failed      INTEGER NOT NULL DEFAULT 0,
  tasks       TEXT NOT NULL DEFAULT '[]'   -- JSON array of TaskInfo dicts (name, queue, schema)
) WITHOUT ROWID;

-- Flow control (see docs/architecture.md). A gate is a queue-scoped limit: its rule (spec JSON)
-- and state: GCRA theoretical arrival time (rate), active jobs (concurrency), breaker state.
-- queue '' holds the process-independent limiters of ctx.limit().
CREATE TABLE IF NOT EXISTS gates (
  queue  TEXT NOT NULL,
  name   TEXT NOT NULL,
  spec   TEXT NOT NULL,
  tat    REAL NOT NULL DEFAULT 0,
  active INTEGER NOT NULL DEFAULT 0,
  state  TEXT NOT NULL DEFAULT 'closed',
  fails  INTEGER NOT NULL DEFAULT 0,
  until  REAL,
  probe  INTEGER NOT NULL DEFAULT 0,
  wstart REAL NOT NULL DEFAULT 0,
  wcalls INTEGER NOT NULL DEFAULT 0,
  wfails INTEGER NOT NULL DEFAULT 0,
  waiters INTEGER NOT NULL DEFAULT 0,  -- flows set aside waiting for this gate's slot
  PRIMARY KEY (queue, name)
) WITHOUT ROWID;

-- One line per flow: its head job's claim score ((100 - priority) * 2^40 + seq; NULL = no ready
-- job) and why it is set aside: a rate/breaker gate until a time, or a full concurrency gate.
CREATE TABLE IF NOT EXISTS flows (
  queue         TEXT NOT NULL,
  flow          TEXT NOT NULL,
  head          INTEGER,
  blocked_until REAL,
  wait_gate     TEXT,
  PRIMARY KEY (queue, flow)
) WITHOUT ROWID;
-- Claimable flows by head: the claim merges them with unlimited jobs in priority/FIFO order.
CREATE INDEX IF NOT EXISTS flows_ready ON flows (queue, head)
  WHERE head IS NOT NULL AND blocked_until IS NULL AND wait_gate IS NULL;
CREATE INDEX IF NOT EXISTS flows_blocked ON flows (queue, blocked_until) WHERE blocked_until IS NOT NULL;
-- Flows waiting for a slot of a gate, best head first (a freed slot admits the best ones).
CREATE INDEX IF NOT EXISTS flows_waiting ON flows (queue, wait_gate, head) WHERE wait_gate IS NOT NULL;

-- Paused queues (Backend.set_queue_paused): a row while the queue is paused. Every claim reads
-- this table in its own transaction and takes nothing from the queues listed.
CREATE TABLE IF NOT EXISTS paused_queues (
  queue  TEXT PRIMARY KEY,
  since  REAL NOT NULL
) WITHOUT ROWID;

-- API keys (conveyor.apikeys): the sha256 of the secret, never the secret. seq orders listings
-- oldest first; tenant NULL only for admin keys.
CREATE TABLE IF NOT EXISTS api_keys (
  seq         INTEGER PRIMARY KEY,
  id          TEXT NOT NULL UNIQUE,
  secret_hash TEXT NOT NULL,
  tenant      TEXT,
  admin       INTEGER NOT NULL DEFAULT 0,
  read_only   INTEGER NOT NULL DEFAULT 0,
  name        TEXT,
  created_at  REAL NOT NULL,
  revoked_at  REAL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant, seq) WHERE tenant IS NOT NULL;

-- Cron and periodic schedules (conveyor.schedule): per (queue, schedule), the last tick claimed
-- (epoch ms), the last tick that fired a job and that job. claim_tick moves last_tick forward
-- with a conditional update in the transaction that inserts the tick's job.
CREATE TABLE IF NOT EXISTS schedules (
  queue      TEXT NOT NULL,
  name       TEXT NOT NULL,
  last_tick  INTEGER NOT NULL,
  last_fire  INTEGER,
  last_job   TEXT,
  PRIMARY KEY (queue, name)
) WITHOUT ROWID;

-- Fan-in (conveyor.AwaitChildren): one edge per child of a parent's last round of children,
-- by spawn index. status, result and error stay NULL until the child's final transition
-- settles the edge, once, in the same transaction (backends/sqlite/fanin.py).
CREATE TABLE IF NOT EXISTS edges (
  child      TEXT PRIMARY KEY,
  parent     TEXT NOT NULL,
  idx        INTEGER NOT NULL,
  status     TEXT,
  result     TEXT,
  error      TEXT,
  settled_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_parent ON edges (parent, idx);

-- Batch records (batches with callbacks, backends/batches.py): member total and final counts,
-- updated in the transaction of each member's final transition; the callbacks' job templates
-- (JSON); fired_at/counts once the callbacks were enqueued (in that same transaction). Kept until
-- expires_at (fired_at + ttl), whatever retention does to the members.
CREATE TABLE IF NOT EXISTS batches (
  id         TEXT PRIMARY KEY,
  tenant     TEXT,
  created_at REAL NOT NULL,
  total      INTEGER NOT NULL DEFAULT 0,
  completed  INTEGER NOT NULL DEFAULT 0,
  failed     INTEGER NOT NULL DEFAULT 0,
  cancelled  INTEGER NOT NULL DEFAULT 0,
  callbacks  TEXT NOT NULL,
  ttl        REAL NOT NULL,
  fired_at   REAL,
  expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_expiry ON batches (expires_at) WHERE expires_at IS NOT NULL;
