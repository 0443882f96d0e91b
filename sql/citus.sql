-- postbox on Citus (docs/design.md, "Past one database: Citus"). Every node
-- runs its own postbox: the triggers on a distributed table fire on the
-- shards, on the worker node that holds them, and write the node's own
-- emitted table in the writing transaction (Citus commits both with its
-- two-phase commit); a postbox-worker per node expands, claims and
-- delivers there. What every node must share is the configuration, which
-- is managed on the coordinator: the catalog, endpoints, their secrets and
-- pauses, and retention. It reaches the worker nodes by PostgreSQL's
-- logical replication (a publication on the coordinator, a subscription on
-- each worker node), applied in the coordinator's commit order.
--
-- Not Citus reference tables: every statement over one is planned by Citus,
-- which cannot plan the generic plans postbox's functions keep (measured:
-- the row trigger's insert failed with "could not create distributed plan"
-- on a worker node), and the health a worker writes would become a
-- two-phase commit over every node.

-- The replicated tables and columns, the one list. An endpoint's health
-- (consecutive failures, failing since, last attempt, success and error,
-- and an automatic disable) is left out: the node that delivers an
-- endpoint's events writes it, and a configuration change must not
-- overwrite it.
CREATE FUNCTION postbox._citus_publication_tables()
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 'postbox.event_types, postbox.endpoints (id, tenant, url, event_types, headers, description, '
           'signature_style, signature_header, envelope, options, enabled, suspended, created_at, updated_at, resumed_at), '
           'postbox.endpoint_secrets, postbox.endpoint_pauses, postbox.retention';
END;
COMMENT ON FUNCTION postbox._citus_publication_tables() IS 'Internal: the tables and columns the coordinator replicates to Citus worker nodes (postbox.citus_replicate_config).';

-- Resuming an endpoint (update_endpoint enabled => true) on the coordinator
-- clears its health there, but the health that counts is the worker node's,
-- which replication leaves alone: this trigger clears it on the node when
-- the resume arrives (resumed_at changes). It fires only in replication's
-- apply (ENABLE REPLICA), so never on the coordinator or on one node.
-- SECURITY INVOKER: it runs as the subscription's owner and only sets NEW.
CREATE FUNCTION postbox._resumed_on_node()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NEW.resumed_at IS DISTINCT FROM OLD.resumed_at THEN
        NEW.disabled_at := NULL;
        NEW.disabled_reason := NULL;
        NEW.consecutive_failures := 0;
        NEW.failing_since := NULL;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION postbox._resumed_on_node() IS 'Internal: on a Citus worker node, clears an endpoint''s health when a resume replicated from the coordinator arrives.';
CREATE TRIGGER resumed_on_node BEFORE UPDATE ON postbox.endpoints
    FOR EACH ROW EXECUTE FUNCTION postbox._resumed_on_node();
ALTER TABLE postbox.endpoints ENABLE REPLICA TRIGGER resumed_on_node;
COMMENT ON TRIGGER resumed_on_node ON postbox.endpoints IS 'Citus worker nodes: a replicated resume clears the health this node keeps (fires in replication''s apply only).';

-- Delivery ids on Citus: a worker node draws its deliveries' ids from its
-- own range, starting at its group id shifted left by this many bits (the
-- coordinator, group 0, keeps the ids from 1), so an id names the node
-- that holds the delivery, and postbox-api sends a request about it there.
-- 48 bits: 2^48 deliveries per node, 2^15 nodes, within bigint.
CREATE FUNCTION postbox._delivery_node_bits()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 48;
END;
COMMENT ON FUNCTION postbox._delivery_node_bits() IS 'Internal: on Citus, a delivery id shifted right by this many bits is the group id of the node that holds it.';
GRANT EXECUTE ON FUNCTION postbox._delivery_node_bits() TO postbox_admin;

-- Run on the coordinator by a superuser (CREATE SUBSCRIPTION needs one on
-- PostgreSQL 14 and 15), outside a transaction block: a subscription's
-- replication slot on the coordinator cannot be made while this
-- transaction holds writes, so the publication is committed first.
-- Idempotent: a worker node that already subscribes is left alone, so it
-- is run again after citus_add_node. A node whose replicated tables hold
-- anything but what CREATE EXTENSION wrote (the catalog's builtin types) is
-- refused: its rows would clash with the coordinator's copy.
-- conninfo: what a worker node adds to reach the coordinator (sslmode,
-- sslrootcert, ...), beside the coordinator's host and port from Citus's
-- metadata, this database and the calling role; never a password (a
-- .pgpass file on each worker node holds it).
-- No SET search_path: a procedure with a SET clause cannot COMMIT. It runs
-- with its caller's rights only, and names what it uses in pg_catalog.
CREATE PROCEDURE postbox.citus_replicate_config(conninfo text DEFAULT '')
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_node   record;
    v_coord  record;
    v_result text;
    v_ok     boolean;
    v_conn   text;
    v_deadline timestamptz;
    v_sub    text;  -- the node's subscription, also its slot here
    v_label  text;  -- host:port, as errors name the node
BEGIN
    IF conninfo OPERATOR(pg_catalog.~*) '(^|[[:space:]])password[[:space:]]*=' THEN
        PERFORM postbox._raise('citus_conninfo_has_password', 'conninfo',
            'postbox: conninfo holds a password, which a failed CREATE SUBSCRIPTION would write to a worker node''s log; give each worker node a .pgpass file instead');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        PERFORM postbox._raise('citus_not_coordinator', 'citus',
            'postbox: citus_replicate_config needs Citus (CREATE EXTENSION citus)');
    END IF;
    -- Worker nodes have Citus's metadata too, the coordinator's row included.
    SELECT nodename, nodeport INTO v_coord FROM pg_catalog.pg_dist_node WHERE groupid = 0 AND noderole = 'primary';
    IF NOT FOUND OR NOT pg_catalog.citus_is_coordinator() THEN
        PERFORM postbox._raise('citus_not_coordinator', 'citus',
            'postbox: citus_replicate_config runs on the coordinator, once it is registered (citus_set_coordinator_host)');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'postbox_config') THEN
        -- Citus would create the publication on every node as well.
        SET LOCAL citus.enable_ddl_propagation = off;
        EXECUTE 'CREATE PUBLICATION postbox_config FOR TABLE ' || postbox._citus_publication_tables();
    END IF;
    COMMIT;
    v_conn := pg_catalog.format('host=%s port=%s dbname=%s user=%s %s', v_coord.nodename, v_coord.nodeport,
                     pg_catalog.current_database(), current_user, conninfo);
    FOR v_node IN SELECT nodename, nodeport, groupid FROM pg_catalog.pg_dist_node
                   WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY groupid LOOP
        v_sub := 'postbox_config_' || v_node.groupid;
        v_label := v_node.nodename || ':' || v_node.nodeport;
        SELECT success, result INTO v_ok, v_result
          FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                                    ARRAY[pg_catalog.format('SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = %L',
                                                 v_sub)], false);
        IF NOT v_ok THEN
            PERFORM postbox._raise('citus_node_failed', 'node',
                pg_catalog.format('postbox: worker node %s could not be asked: %s', v_label, v_result), v_label);
        END IF;
        CONTINUE WHEN v_result <> '0';
        SELECT success, result INTO v_ok, v_result
          FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                                    ARRAY['SELECT (SELECT count(*) FROM postbox.event_types WHERE NOT builtin)'
                                          ' + (SELECT count(*) FROM postbox.endpoints)'
                                          ' + (SELECT count(*) FROM postbox.retention)'], false);
        IF NOT v_ok OR v_result <> '0' THEN
            PERFORM postbox._raise('citus_node_has_configuration', 'node',
                pg_catalog.format('postbox: worker node %s already holds postbox configuration of its own; it cannot subscribe to the coordinator''s',
                                  v_label),
                v_label);
        END IF;
        FOR v_result IN
            SELECT 'DELETE FROM postbox.event_types'
            UNION ALL
            -- The node's deliveries take ids from its own range.
            SELECT pg_catalog.format('SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(''postbox.outbox'', ''id''), %s, false)',
                                     (v_node.groupid::bigint OPERATOR(pg_catalog.<<) postbox._delivery_node_bits()) OPERATOR(pg_catalog.+) 1)
            UNION ALL
            SELECT pg_catalog.format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION postbox_config', v_sub, v_conn)
        LOOP
            SELECT success, result INTO v_ok, v_result
              FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport], ARRAY[v_result], false);
            -- Not the node's answer: it may quote the connection string.
            IF NOT v_ok THEN
                PERFORM postbox._raise('citus_node_failed', 'node',
                    pg_catalog.format('postbox: worker node %s could not subscribe to the configuration (its server log says why)',
                                      v_label),
                    v_label);
            END IF;
        END LOOP;
        -- Until the node has copied every table: before that, a change to a
        -- table still being copied reaches the node later than changes to
        -- the others, and citus_config_replicated could not tell.
        v_deadline := pg_catalog.clock_timestamp() + interval '60 seconds';
        LOOP
            SELECT success, result INTO v_ok, v_result
              FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                       ARRAY[pg_catalog.format('SELECT count(*) FROM pg_catalog.pg_subscription_rel r'
                                               ' JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid'
                                               ' WHERE s.subname = %L AND r.srsubstate <> ''r''',
                                               v_sub)], false);
            EXIT WHEN v_ok AND v_result = '0';
            IF pg_catalog.clock_timestamp() > v_deadline THEN
                PERFORM postbox._raise('citus_node_failed', 'node',
                    pg_catalog.format('postbox: worker node %s has not copied the configuration within 60 seconds (its server log says why)',
                                      v_label),
                    v_label);
            END IF;
            PERFORM pg_catalog.pg_sleep(0.05);
        END LOOP;
    END LOOP;
END
$fn$;
COMMENT ON PROCEDURE postbox.citus_replicate_config(text) IS 'Citus coordinator, superuser: replicates postbox''s configuration to every worker node that does not have it yet (a publication here, a subscription there). Run again after adding a node.';

-- Whether every worker node's subscription has applied the coordinator's
-- WAL up to since: a change committed before since is then on every node.
CREATE FUNCTION postbox.citus_config_replicated(since pg_lsn DEFAULT pg_current_wal_lsn())
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT count(*) = (SELECT count(*) FROM pg_replication_slots s WHERE s.slot_name LIKE 'postbox\_config\_%')
           AND count(*) > 0
      FROM pg_stat_replication r
      JOIN pg_replication_slots s ON s.active_pid = r.pid AND s.slot_name LIKE 'postbox\_config\_%'
     WHERE r.replay_lsn >= since;
END;
COMMENT ON FUNCTION postbox.citus_config_replicated(pg_lsn) IS 'Citus coordinator: whether every worker node has applied the configuration committed here before since (default: now).';
-- The configuration fence of a Citus worker node. The node routes events
-- by its copy of the configuration, which trails the coordinator's by
-- replication's lag (milliseconds, or without bound if replication
-- stops): an endpoint made on the coordinator just before a write would
-- miss the write's event. So a node expands only the emitted rows that
-- committed before a moment at which its copy was known current: it takes
-- a snapshot, then asks the coordinator for its flushed WAL position (every
-- configuration change committed before the snapshot is below it), and the
-- snapshot becomes safe once the node's subscription has applied up to
-- that position. One question at a time, at most every
-- _config_fence_interval(), pipelined: while one waits for replication,
-- the rows of the previous safe snapshot are expanded.
CREATE TABLE postbox.config_fence (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    safe        pg_snapshot,   -- rows committed in it may be expanded
    pending     pg_snapshot,   -- taken just before asking the coordinator
    pending_lsn pg_lsn,        -- the coordinator's flushed WAL then
    asked_at    timestamptz
);
COMMENT ON TABLE postbox.config_fence IS 'Citus worker nodes: the snapshot whose emitted rows may be expanded (the configuration was current for them) and the question pending to the coordinator; one row.';

-- How often a node may ask the coordinator (a new connection each time,
-- Citus's run_command_on_coordinator): 100 ms bounds it to 10 a second
-- per node while adding at most that to an event's way out.
CREATE FUNCTION postbox._config_fence_interval()
RETURNS interval
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT interval '100 milliseconds';
END;
COMMENT ON FUNCTION postbox._config_fence_interval() IS 'Internal: the least time between two questions of a Citus worker node to the coordinator for the configuration fence.';

-- Whether a row whose xmin is p_xmin committed in p_snap. xmin is 32 bits
-- and a snapshot's ids 64: the row's epoch is its snapshot's, or the one
-- before when the 32 bits are above the snapshot's. A row older than 2^30
-- transactions is taken as committed (emitted rows live seconds).
CREATE FUNCTION postbox._committed_in(p_xmin xid, p_snap pg_snapshot)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT CASE WHEN pg_catalog.age(p_xmin) > 1073741824 THEN true
                ELSE pg_catalog.pg_visible_in_snapshot(
                       (((x.xmax8 OPERATOR(pg_catalog.>>) 32)
                         OPERATOR(pg_catalog.-) (p_xmin::text::bigint OPERATOR(pg_catalog.>) (x.xmax8 OPERATOR(pg_catalog.&) 4294967295))::integer)
                        OPERATOR(pg_catalog.<<) 32
                        OPERATOR(pg_catalog.|) p_xmin::text::bigint)::text::xid8,
                       p_snap) END
      FROM (SELECT pg_catalog.pg_snapshot_xmax(p_snap)::text::bigint AS xmax8) x;
END;
COMMENT ON FUNCTION postbox._committed_in(xid, pg_snapshot) IS 'Internal: whether the transaction with 32-bit id p_xmin (a row''s xmin) had committed in snapshot p_snap.';

-- How far this node has applied the coordinator's configuration: the
-- position in the last message of the coordinator's walsender, which pings
-- with its position once it has sent everything (and the apply worker
-- applies what came before a ping before reading it). NULL while the
-- subscription is not running.
CREATE FUNCTION postbox._config_applied()
RETURNS pg_lsn
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT min(s.latest_end_lsn)
      FROM pg_stat_subscription s
     WHERE s.subname LIKE 'postbox\_config\_%' AND s.relid IS NULL AND s.pid IS NOT NULL;
END;
COMMENT ON FUNCTION postbox._config_applied() IS 'Internal: on a Citus worker node, the coordinator''s WAL position up to which the configuration''s subscription has applied (NULL: not running).';

-- Called by expand_events under the expansion lock. fenced: this node
-- subscribes to the coordinator's configuration (elsewhere: false, and
-- nothing else is done); safe: the snapshot whose rows may be expanded
-- (NULL: none yet). SECURITY INVOKER: it runs as expand_events' owner,
-- asks the coordinator one fixed statement, and writes config_fence.
CREATE FUNCTION postbox._config_fence(OUT fenced boolean, OUT safe pg_snapshot)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f         postbox.config_fence;
    v_applied pg_lsn;
    v_snap    pg_snapshot;
    v_ok      boolean;
    v_result  text;
BEGIN
    fenced := EXISTS (SELECT FROM pg_subscription s
                       WHERE s.subname LIKE 'postbox\_config\_%'
                         AND s.subdbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()));
    IF NOT fenced THEN
        RETURN;
    END IF;
    SELECT * INTO f FROM postbox.config_fence;
    v_applied := postbox._config_applied();
    IF f.pending_lsn IS NOT NULL AND v_applied >= f.pending_lsn THEN
        f.safe := f.pending;
        f.pending := NULL;
        f.pending_lsn := NULL;
    END IF;
    IF f.pending_lsn IS NULL AND EXISTS (SELECT FROM postbox.emitted)
       AND (f.asked_at IS NULL OR f.asked_at < clock_timestamp() - postbox._config_fence_interval()) THEN
        v_snap := pg_current_snapshot();
        SELECT c.success, c.result INTO v_ok, v_result
          FROM run_command_on_coordinator('SELECT pg_current_wal_flush_lsn()') c;
        f.asked_at := clock_timestamp();
        IF v_ok THEN
            f.pending := v_snap;
            f.pending_lsn := v_result::pg_lsn;
            -- A replication that keeps up answers within milliseconds: wait
            -- that long for it here (a manual expand_events then works in
            -- one call), and no longer (the caller holds the expansion lock).
            LOOP
                IF postbox._config_applied() >= f.pending_lsn THEN
                    f.safe := f.pending;
                    f.pending := NULL;
                    f.pending_lsn := NULL;
                    EXIT;
                END IF;
                EXIT WHEN clock_timestamp() > f.asked_at + interval '50 milliseconds';
                PERFORM pg_sleep(0.002);
            END LOOP;
        END IF;
    END IF;
    INSERT INTO postbox.config_fence AS c (singleton, safe, pending, pending_lsn, asked_at)
    VALUES (true, f.safe, f.pending, f.pending_lsn, f.asked_at)
    ON CONFLICT (singleton) DO UPDATE
       SET safe = EXCLUDED.safe, pending = EXCLUDED.pending, pending_lsn = EXCLUDED.pending_lsn,
           asked_at = EXCLUDED.asked_at;
    safe := f.safe;
END
$fn$;
COMMENT ON FUNCTION postbox._config_fence() IS 'Internal: on a Citus worker node, the snapshot whose emitted rows were written under configuration the node has applied (see config_fence).';

-- ALL FUNCTIONS in sql/native.sql does not cover procedures.
REVOKE ALL ON PROCEDURE postbox.citus_replicate_config(text) FROM PUBLIC;
