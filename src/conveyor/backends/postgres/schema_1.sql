-- conveyor PostgreSQL schema, version 1. {s} is the schema (URL option ?schema=, default
-- conveyor). Run by migrations.py in one transaction under an advisory lock.
CREATE TABLE {s}.meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);

-- fillfactor 70: a new row version finds room on its own page, and the updates that change no
-- indexed column (progress, lease renewals: lease_expires_at is in no index) are HOT. Autovacuum
-- runs after 2% of the rows changed (not the default 20%): the table is small and churns.
CREATE TABLE {s}.jobs (
  id               text PRIMARY KEY,
  seq              bigint GENERATED ALWAYS AS IDENTITY,
  queue            text NOT NULL,
  task             text NOT NULL,
  payload          text NOT NULL,
  priority         integer NOT NULL,
  status           text NOT NULL,
  attempt          integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL,
  stalls           integer NOT NULL DEFAULT 0,
  max_stalls       integer NOT NULL,
  timeout          double precision,
  lease            double precision NOT NULL,
  progress         text,
  result           text,
  error            text,
  tenant           text,
  batch            text,
  workflow         text,
  parent           text,
  idempotency_key  text,
  created_at       double precision NOT NULL,
  scheduled_for    double precision,
  started_at       double precision,
  finished_at      double precision,
  lease_expires_at double precision,
  worker           text,
  flow             text,
  token            bigint NOT NULL DEFAULT 0,
  meta             text,
  cost             text,
  step             text,
  steps            integer,
  next_jobs        text,
  prompt           text,
  await_deadline   double precision,
  on_timeout       text,
  await_data       text,
  input            text,
  resumes          integer NOT NULL DEFAULT 0,
  fanin            text,
  held             boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE UNIQUE INDEX jobs_seq ON {s}.jobs (seq);
-- The claim path: ready unlimited jobs of a queue, highest priority first, then FIFO.
CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, seq)
  WHERE status = 'queued' AND flow IS NULL;
-- Promotion of due delayed / backoff jobs, and the next due time of a worker's queues.
CREATE INDEX jobs_scheduled ON {s}.jobs (queue, scheduled_for) WHERE status = 'scheduled';
-- Lease recovery reads the active jobs (as many as the workers' slots) and checks their
-- lease: lease_expires_at is in no index, so a renewal is a HOT update.
CREATE INDEX jobs_active ON {s}.jobs (queue) WHERE status = 'active';
CREATE INDEX jobs_awaiting ON {s}.jobs (seq) WHERE status = 'awaiting';
CREATE INDEX jobs_await_due ON {s}.jobs (await_deadline)
  WHERE status = 'awaiting' AND await_deadline IS NOT NULL;
CREATE INDEX jobs_finished ON {s}.jobs (queue, status, finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency ON {s}.jobs (queue, coalesce(tenant, ''), idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant ON {s}.jobs (tenant, seq) WHERE tenant IS NOT NULL;
CREATE INDEX jobs_batch ON {s}.jobs (batch) WHERE batch IS NOT NULL;
CREATE INDEX jobs_workflow ON {s}.jobs (workflow, seq) WHERE workflow IS NOT NULL;

-- The event log. Sequence values are not commit order: each event records its transaction id
-- (xid), and readers hand out only events of transactions older than the oldest one still
-- running, ordered by (xid, id). See docs/postgres.md "The event cursor".
CREATE TABLE {s}.events (
  id      bigint GENERATED ALWAYS AS IDENTITY,
  xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
  type    text NOT NULL,
  job_id  text,
  queue   text,
  task    text,
  tenant  text,
  time    double precision NOT NULL,
  data    text
);
CREATE UNIQUE INDEX events_pos ON {s}.events (xid, id);
CREATE INDEX events_queue ON {s}.events (queue, xid, id) WHERE queue IS NOT NULL;
CREATE INDEX events_tenant ON {s}.events (tenant, xid, id) WHERE tenant IS NOT NULL;
CREATE INDEX events_job ON {s}.events (job_id, xid, id) WHERE job_id IS NOT NULL;

-- Counts by state: transitions append deltas (inserts never wait on each other); stats() and
-- the maintenance loop fold them into counts. No row is updated by every transition.
CREATE TABLE {s}.count_deltas (
  id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue  text NOT NULL,
  status text NOT NULL,
  n      integer NOT NULL
);
CREATE TABLE {s}.counts (
  queue  text NOT NULL,
  status text NOT NULL,
  n      bigint NOT NULL,
  PRIMARY KEY (queue, status)
);

CREATE TABLE {s}.costs (
  queue text NOT NULL,
  task  text NOT NULL,
  unit  text NOT NULL,
  total double precision NOT NULL,
  PRIMARY KEY (queue, task, unit)
);

CREATE TABLE {s}.workers (
  id          text PRIMARY KEY,
  queues      text NOT NULL,
  concurrency integer NOT NULL,
  active      integer NOT NULL,
  pid         integer NOT NULL,
  host        text NOT NULL,
  started_at  double precision NOT NULL,
  seen_at     double precision NOT NULL,
  ttl         double precision NOT NULL,
  running     text NOT NULL DEFAULT '[]',
  processed   integer NOT NULL DEFAULT 0,
  failed      integer NOT NULL DEFAULT 0,
  tasks       text NOT NULL DEFAULT '[]'
);

-- Flow control (docs/architecture.md "Flow control"; the same model as SQLite's): a gate is a
-- queue-scoped limit, its rule (spec JSON) and state; queue '' holds the ctx.limit() gates.
-- Every change of a queue's gates and flows happens under that queue's flow lock (an advisory
-- transaction lock, `flows.lock`): flow-controlled claims of one queue take turns, as on SQLite;
-- unlimited jobs never take it.
CREATE TABLE {s}.gates (
  queue   text NOT NULL,
  name    text NOT NULL,
  spec    text NOT NULL,
  tat     double precision NOT NULL DEFAULT 0,
  active  integer NOT NULL DEFAULT 0,
  state   text NOT NULL DEFAULT 'closed',
  fails   integer NOT NULL DEFAULT 0,
  until   double precision,
  probe   integer NOT NULL DEFAULT 0,
  wstart  double precision NOT NULL DEFAULT 0,
  wcalls  integer NOT NULL DEFAULT 0,
  wfails  integer NOT NULL DEFAULT 0,
  waiters integer NOT NULL DEFAULT 0,
  PRIMARY KEY (queue, name)
);

-- One row per flow: its head job's claim score ((100 - priority) * 2^40 + seq; NULL = no ready
-- job) and why it is set aside (a rate/breaker gate until a time, or a full concurrency gate).
CREATE TABLE {s}.flows (
  queue         text NOT NULL,
  flow          text NOT NULL,
  head          bigint,
  blocked_until double precision,
  wait_gate     text,
  PRIMARY KEY (queue, flow)
);
CREATE INDEX flows_ready ON {s}.flows (queue, head)
  WHERE head IS NOT NULL AND blocked_until IS NULL AND wait_gate IS NULL;
CREATE INDEX flows_heads ON {s}.flows (queue) WHERE head IS NOT NULL;
CREATE INDEX flows_waiting ON {s}.flows (queue, wait_gate, head) WHERE wait_gate IS NOT NULL;
-- Ready jobs of one flow, in claim order; due scheduled flow jobs (promoted under the lock).
CREATE INDEX jobs_flow ON {s}.jobs (queue, flow, priority DESC, seq)
  WHERE status = 'queued' AND flow IS NOT NULL;
CREATE INDEX jobs_scheduled_flow ON {s}.jobs (queue, scheduled_for)
  WHERE status = 'scheduled' AND flow IS NOT NULL;
-- Cancelled attempts of flow jobs still running (jobs.held): they hold their gates' slots until
-- they end or their lease expires. A flag of its own, not lease_expires_at: a column in an
-- index predicate would make every lease renewal a non-HOT update.
CREATE INDEX jobs_held ON {s}.jobs (queue) WHERE held;

CREATE TABLE {s}.paused_queues (
  queue text PRIMARY KEY,
  since double precision NOT NULL
);

CREATE TABLE {s}.api_keys (
  seq         bigint GENERATED ALWAYS AS IDENTITY,
  id          text PRIMARY KEY,
  secret_hash text NOT NULL,
  tenant      text,
  admin       boolean NOT NULL DEFAULT false,
  read_only   boolean NOT NULL DEFAULT false,
  name        text,
  created_at  double precision NOT NULL,
  revoked_at  double precision
);
CREATE INDEX api_keys_tenant ON {s}.api_keys (tenant, seq) WHERE tenant IS NOT NULL;

CREATE TABLE {s}.schedules (
  queue     text NOT NULL,
  name      text NOT NULL,
  last_tick bigint NOT NULL,
  last_fire bigint,
  last_job  text,
  PRIMARY KEY (queue, name)
);

CREATE TABLE {s}.batches (
  id         text PRIMARY KEY,
  tenant     text,
  created_at double precision NOT NULL,
  total      integer NOT NULL DEFAULT 0,
  completed  integer NOT NULL DEFAULT 0,
  failed     integer NOT NULL DEFAULT 0,
  cancelled  integer NOT NULL DEFAULT 0,
  callbacks  text NOT NULL,
  ttl        double precision NOT NULL,
  fired_at   double precision,
  expires_at double precision
);
CREATE INDEX batches_expiry ON {s}.batches (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE {s}.edges (
  child      text PRIMARY KEY,
  parent     text NOT NULL,
  idx        integer NOT NULL,
  status     text,
  result     text,
  error      text,
  settled_at double precision
);
CREATE INDEX edges_parent ON {s}.edges (parent, idx);
