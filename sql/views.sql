-- postbox: the views admins read (endpoint state, settings, deliveries, the
-- delivery log, stats).

CREATE VIEW postbox.endpoint_status AS
SELECT e.id, e.tenant, e.url, e.event_types, e.enabled,
       postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) AS status,
       e.disabled_reason, e.consecutive_failures, e.last_attempt_at, e.last_success_at, e.last_error,
       (SELECT count(*) FROM postbox.outbox d
         WHERE d.endpoint_id = e.id AND d.status = 'pending')
     + (SELECT count(*)  -- emitted, not yet expanded, and routed to e
          FROM postbox.emitted m
         CROSS JOIN LATERAL postbox._emitted_events(m.tenant, m.data, m.rows::jsonb, m.trigger_args, m.ordering_key) x
         WHERE x.tenant = e.tenant
           AND e.id IN (SELECT r.endpoint_id FROM postbox._routes(x.tenant, m.event_type, m.created_at) r))
       AS pending,
       e.suspended
  FROM postbox.endpoints e;
COMMENT ON VIEW postbox.endpoint_status IS 'One row per endpoint: healthy, failing, disabled (automatic) or paused (enabled = false), and its pending deliveries.';
GRANT SELECT ON postbox.endpoint_status TO postbox_admin;

-- What a settings page's edit form shows: everything but secret material.
CREATE VIEW postbox.endpoint_settings AS
SELECT e.id, e.tenant, e.url, e.event_types, e.headers, e.description, e.options,
       e.signature_style, e.signature_header, e.envelope, e.enabled, e.suspended,
       postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) AS status,
       e.disabled_at, e.disabled_reason, e.created_at, e.updated_at,
       -- The secrets that sign now, newest first: when each was made and
       -- until when a rotated one still signs. Never the secret itself.
       (SELECT coalesce(jsonb_agg(jsonb_build_object('created_at', s.created_at, 'expires_at', s.expires_at)
                                  ORDER BY s.created_at DESC), '[]')
          FROM postbox.endpoint_secrets s
         WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())) AS secrets
  FROM postbox.endpoints e;
COMMENT ON VIEW postbox.endpoint_settings IS 'Every endpoint''s configuration and state, for an edit form: everything but secret material (each signing secret''s creation and expiry only).';
GRANT SELECT ON postbox.endpoint_settings TO postbox_admin;

-- Filtered by tenant, each branch reads through an index: pending rows
-- through the tenant's endpoints (endpoints_tenant, outbox_due), failed and
-- cancelled ones through outbox_settled, succeeded ones through
-- attempt_log_endpoint. batch_deliveries (0.9.0) is every delivery of the
-- request that delivered it (itself alone unless it went in a batch): by id,
-- `WHERE id = $1 AND batch_deliveries @> ARRAY[$1]` finds a delivery that
-- succeeded in a batch through attempt_log_batch_deliveries.
CREATE VIEW postbox.deliveries AS
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type,
       CASE WHEN d.lease_until > now() THEN 'in_flight'
            WHEN NOT d.is_test AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('suspended', 'paused')
                 THEN 'held'
            ELSE 'pending' END AS status,
       d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at,
       ARRAY[d.id] AS batch_deliveries
  FROM postbox.endpoints e
  JOIN postbox.outbox d ON d.endpoint_id = e.id AND d.tenant = e.tenant AND d.status = 'pending'
  LEFT JOIN postbox.events v ON v.id = d.event_id
UNION ALL
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type, d.status, d.attempts, NULL,
       d.last_status_code, d.last_error, d.created_at, ARRAY[d.id]
  FROM postbox.outbox d
  LEFT JOIN postbox.events v ON v.id = d.event_id
 WHERE d.status <> 'pending'
UNION ALL
SELECT a.delivery_id, a.tenant, a.endpoint_id, a.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at, ARRAY[a.delivery_id]
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.outcome = 'succeeded' AND a.delivery_ids IS NULL
UNION ALL
-- A batch's deliveries; created_at is the batch's first delivery's.
SELECT b.delivery_id, a.tenant, a.endpoint_id, b.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at, a.delivery_ids
  FROM postbox.attempt_log a
 CROSS JOIN LATERAL unnest(a.delivery_ids, a.event_ids) AS b(delivery_id, event_id)
  LEFT JOIN postbox.events v ON v.id = b.event_id
 WHERE a.outcome = 'succeeded' AND a.delivery_ids IS NOT NULL;
COMMENT ON VIEW postbox.deliveries IS 'Every delivery with its status: pending, in_flight, held, succeeded, failed or cancelled; batch_deliveries: the deliveries of the request that delivered it.';
GRANT SELECT ON postbox.deliveries TO postbox_admin;

-- The delivery log: a row per attempt of each delivery, so a batch's
-- attempt shows once for each of its deliveries, with the batch's id.
-- Filtered by tenant (and endpoint, and time) it reads through
-- attempt_log_endpoint; by delivery, as the deliveries view (see there).
CREATE VIEW postbox.attempts AS
SELECT a.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, a.event_id, a.outcome,
       v.event_type, v.data::jsonb AS data,
       -- {} when nothing was sent (the attempt failed before its request).
       coalesce(a.request_headers, '{}') AS request_headers,
       a.is_test, a.batch_id, ARRAY[a.delivery_id] AS batch_deliveries
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.delivery_ids IS NULL
UNION ALL
SELECT b.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, b.event_id, a.outcome,
       v.event_type, v.data::jsonb, coalesce(a.request_headers, '{}'), a.is_test, a.batch_id, a.delivery_ids
  FROM postbox.attempt_log a
 CROSS JOIN LATERAL unnest(a.delivery_ids, a.event_ids) AS b(delivery_id, event_id)
  LEFT JOIN postbox.events v ON v.id = b.event_id
 WHERE a.delivery_ids IS NOT NULL;
COMMENT ON VIEW postbox.attempts IS 'The delivery log: every attempt of each delivery with its event (type, id, data), the headers it sent but the signature, the status code, the first 4 KiB of the response, the error and the duration; a batch''s attempt once per delivery, with batch_id (its webhook-id) and batch_deliveries.';
GRANT SELECT ON postbox.attempts TO postbox_admin;

-- An endpoint's success rate over a window: succeeded over all attempts,
-- to 4 places; NULL without attempts. endpoint_stats uses it, and
-- postbox-api on Citus, for counts summed over the nodes.
CREATE FUNCTION postbox._success_rate(p_succeeded bigint, p_failed bigint)
RETURNS numeric
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT round(p_succeeded::numeric / nullif(p_succeeded + p_failed, 0), 4);
END;
COMMENT ON FUNCTION postbox._success_rate(bigint, bigint) IS 'Internal: succeeded over all attempts, to 4 places (NULL without attempts).';
GRANT EXECUTE ON FUNCTION postbox._success_rate(bigint, bigint) TO postbox_admin;

-- Success and failure counts per endpoint over the last hour, day and week,
-- from attempts (test sends left out; a retry that failed counts as a
-- failure). Each endpoint's week is an index-only range scan of
-- attempt_log_endpoint, never a scan of the log.
CREATE VIEW postbox.endpoint_stats AS
SELECT s.id, s.tenant,
       s.succeeded_1h, s.failed_1h,
       postbox._success_rate(s.succeeded_1h, s.failed_1h) AS success_rate_1h,
       s.succeeded_24h, s.failed_24h,
       postbox._success_rate(s.succeeded_24h, s.failed_24h) AS success_rate_24h,
       s.succeeded_7d, s.failed_7d,
       postbox._success_rate(s.succeeded_7d, s.failed_7d) AS success_rate_7d
  FROM (SELECT e.id, e.tenant, w.*
          FROM postbox.endpoints e
         CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '1 hour') AS succeeded_1h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split') AND a.started_at > now() - interval '1 hour') AS failed_1h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '24 hours') AS succeeded_24h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split') AND a.started_at > now() - interval '24 hours') AS failed_24h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded_7d,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split')) AS failed_7d
                 FROM postbox.attempt_log a
                WHERE a.tenant = e.tenant AND a.endpoint_id = e.id
                  AND a.started_at > now() - interval '7 days' AND NOT a.is_test) w) s;
COMMENT ON VIEW postbox.endpoint_stats IS 'Per endpoint: succeeded and failed attempts and the success rate over the last 1 hour, 24 hours and 7 days (test sends left out).';
GRANT SELECT ON postbox.endpoint_stats TO postbox_admin;

-- endpoint_stats hour by hour over the last 7 days (0.9.0), counted as
-- endpoint_stats counts: per request, a batch's once. hours_ago 0 is the
-- last hour. Filtered by tenant and endpoint it reads through
-- attempt_log_endpoint.
CREATE VIEW postbox.endpoint_hourly_stats AS
SELECT a.tenant, a.endpoint_id AS id,
       floor(extract(epoch FROM now() - a.started_at) / 3600)::integer AS hours_ago,
       count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split')) AS failed
  FROM postbox.attempt_log a
 WHERE a.started_at > now() - interval '7 days' AND NOT a.is_test
 GROUP BY a.tenant, a.endpoint_id, 3;
COMMENT ON VIEW postbox.endpoint_hourly_stats IS 'Per endpoint and hour of the last 7 days (hours_ago 0: the last hour): succeeded and failed attempts, test sends left out; a batch''s request counts once, as in endpoint_stats.';
GRANT SELECT ON postbox.endpoint_hourly_stats TO postbox_admin;

-- postbox's own events (operator notifications), for a product that would
-- rather poll than receive them: newest last by id (UUIDv7, time-ordered),
-- so `WHERE id > $last ORDER BY id` reads on from where it stopped. They
-- are kept as long as other events (postbox.set_retention).
CREATE VIEW postbox.operator_events AS
SELECT v.id, v.event_type, v.created_at, v.data ->> 'tenant' AS tenant,
       (v.data ->> 'endpoint_id')::uuid AS endpoint_id, v.data ->> 'reason' AS reason, v.data::jsonb AS data
  FROM postbox.events v
 WHERE v.tenant = postbox.operator_tenant() AND postbox._reserved_type(v.event_type);
COMMENT ON VIEW postbox.operator_events IS 'postbox''s own events (postbox.endpoint.failing, disabled, recovered, created, updated, deleted; postbox.delivery.exhausted), expanded, with the tenant, endpoint and reason each is about.';
GRANT SELECT ON postbox.operator_events TO postbox_admin;
