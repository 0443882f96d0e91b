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
         CROSS JOIN LATERAL postbox._emitted_events(m.tenant, m.data, m.rows::jsonb, m.trigger_args) x
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
-- attempt_log_endpoint.
CREATE VIEW postbox.deliveries AS
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type,
       CASE WHEN d.lease_until > now() THEN 'in_flight'
            WHEN NOT d.is_test AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('suspended', 'paused')
                 THEN 'held'
            ELSE 'pending' END AS status,
       d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at
  FROM postbox.endpoints e
  JOIN postbox.outbox d ON d.endpoint_id = e.id AND d.tenant = e.tenant AND d.status = 'pending'
  LEFT JOIN postbox.events v ON v.id = d.event_id
UNION ALL
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type, d.status, d.attempts, NULL,
       d.last_status_code, d.last_error, d.created_at
  FROM postbox.outbox d
  LEFT JOIN postbox.events v ON v.id = d.event_id
 WHERE d.status <> 'pending'
UNION ALL
SELECT a.delivery_id, a.tenant, a.endpoint_id, a.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.outcome = 'succeeded';
COMMENT ON VIEW postbox.deliveries IS 'Every delivery with its status: pending, in_flight, held, succeeded, failed or cancelled.';
GRANT SELECT ON postbox.deliveries TO postbox_admin;

-- The delivery log. Filtered by tenant (and endpoint, and time) it reads
-- through attempt_log_endpoint.
CREATE VIEW postbox.attempts AS
SELECT a.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, a.event_id, a.outcome,
       v.event_type, v.data,
       -- {} when nothing was sent (the attempt failed before its request).
       coalesce(a.request_headers, '{}') AS request_headers,
       a.is_test
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id;
COMMENT ON VIEW postbox.attempts IS 'The delivery log: every attempt with its event (type, id, data), the headers it sent but the signature, the status code, the first 4 KiB of the response, the error and the duration.';
GRANT SELECT ON postbox.attempts TO postbox_admin;

-- Success and failure counts per endpoint over the last hour, day and week,
-- from attempts (test sends left out; a retry that failed counts as a
-- failure). Each endpoint's week is an index-only range scan of
-- attempt_log_endpoint, never a scan of the log.
CREATE VIEW postbox.endpoint_stats AS
SELECT s.id, s.tenant,
       s.succeeded_1h, s.failed_1h,
       round(s.succeeded_1h::numeric / nullif(s.succeeded_1h + s.failed_1h, 0), 4) AS success_rate_1h,
       s.succeeded_24h, s.failed_24h,
       round(s.succeeded_24h::numeric / nullif(s.succeeded_24h + s.failed_24h, 0), 4) AS success_rate_24h,
       s.succeeded_7d, s.failed_7d,
       round(s.succeeded_7d::numeric / nullif(s.succeeded_7d + s.failed_7d, 0), 4) AS success_rate_7d
  FROM (SELECT e.id, e.tenant, w.*
          FROM postbox.endpoints e
         CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '1 hour') AS succeeded_1h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed') AND a.started_at > now() - interval '1 hour') AS failed_1h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '24 hours') AS succeeded_24h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed') AND a.started_at > now() - interval '24 hours') AS failed_24h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded_7d,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed')) AS failed_7d
                 FROM postbox.attempt_log a
                WHERE a.tenant = e.tenant AND a.endpoint_id = e.id
                  AND a.started_at > now() - interval '7 days' AND NOT a.is_test) w) s;
COMMENT ON VIEW postbox.endpoint_stats IS 'Per endpoint: succeeded and failed attempts and the success rate over the last 1 hour, 24 hours and 7 days (test sends left out).';
GRANT SELECT ON postbox.endpoint_stats TO postbox_admin;
