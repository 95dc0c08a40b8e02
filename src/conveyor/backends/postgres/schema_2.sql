-- conveyor PostgreSQL schema, version 2: packed `enqueued` events.
--
-- A bulk enqueue (more than one job, all queued now, one queue, task and tenant) writes ONE
-- event row for all its jobs: `job_ids` lists them in enqueue order and `job_id` is NULL. A
-- reader hands them out one by one, at positions (xid, id, k): see events.py. One row per job
-- cost a bulk enqueue nearly half its WAL (an events heap tuple and three index entries per
-- job: 430 of 918 bytes per job) and a quarter of the server's CPU.
ALTER TABLE {s}.events ADD COLUMN job_ids text[];
-- A job's packed `enqueued` event, found from the job (a job-filtered read): the events row's
-- id, through events_packed (one entry per packed row, not per job).
ALTER TABLE {s}.jobs ADD COLUMN enq_event bigint;
CREATE INDEX events_packed ON {s}.events (id) WHERE job_ids IS NOT NULL;
