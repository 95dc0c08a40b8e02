-- conveyor PostgreSQL schema, version 2: packed `enqueued` events.
--
-- A bulk enqueue (more than one job, all queued now, one queue, task and tenant) writes ONE
-- event row for all its jobs: `job_ids` lists them in enqueue order and `job_id` is NULL. A
-- reader hands them out one by one, at positions (xid, id, k): see events.py. One row per job
-- cost a bulk enqueue nearly half its WAL (an events heap tuple and three index entries per
-- job: 430 of 918 bytes per job) and a quarter of the server's CPU.
ALTER TABLE {s}.events ADD COLUMN job_ids text[];
-- The packed row's key (random, drawn by the producer): its jobs name it in `enq_pack`, so a
-- job-filtered read finds the row through events_packed (one entry per bulk, not per job). Not
-- the row's id: taking an identity value before the insert needs USAGE on the sequence, which
-- an application role granted only table privileges does not have.
ALTER TABLE {s}.events ADD COLUMN pack bigint;
ALTER TABLE {s}.jobs ADD COLUMN enq_pack bigint;
-- Built inside the migration's transaction, which holds the ALTERs' ACCESS EXCLUSIVE locks of
-- events and jobs until it ends: every use of both tables waits for this one scan of the log
-- (docs/postgres.md, "Migrations").
CREATE INDEX events_packed ON {s}.events (pack) WHERE pack IS NOT NULL;
