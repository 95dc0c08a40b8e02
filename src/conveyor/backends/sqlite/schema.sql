-- conveyor SQLite schema, version 1. Applied once per file inside BEGIN IMMEDIATE.
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
  worker           TEXT
);
-- The claim path: ready jobs of a queue, highest priority first, then FIFO. O(log n).
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, seq) WHERE status = 'queued';
-- Promotion of due delayed/backoff jobs.
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (scheduled_for) WHERE status = 'scheduled';
-- Recovery of expired leases.
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE status = 'active';
-- Retention and cleanup of finished jobs (finished_at is set only in final states).
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (queue, status, finished_at) WHERE finished_at IS NOT NULL;
-- Idempotency keys are unique per queue.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch) WHERE batch IS NOT NULL;

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

CREATE TABLE IF NOT EXISTS workers (
  id          TEXT PRIMARY KEY,
  queues      TEXT NOT NULL,
  concurrency INTEGER NOT NULL,
  active      INTEGER NOT NULL,
  pid         INTEGER NOT NULL,
  host        TEXT NOT NULL,
  started_at  REAL NOT NULL,
  seen_at     REAL NOT NULL,
  ttl         REAL NOT NULL
) WITHOUT ROWID;
