"""schemathesis hooks for postbox-api: a check that no answer lets a key
reach what its kind may not (POSTBOX_ST_ROLE names the key's kind)."""

import os

import schemathesis

ROLE = os.environ["POSTBOX_ST_ROLE"]


@schemathesis.check
def key_reach(ctx, response, case):
    if not 200 <= response.status_code < 300:
        return None
    method, path = case.method.upper(), case.path
    for_tenant = path.startswith("/v1/tenants/")
    if ROLE == "member":
        assert method == "GET", f"a member key was allowed {method} {path}"
        assert "/api-keys" not in path, f"a member key reached {path}"
    if ROLE in ("admin", "member"):
        assert not for_tenant, f"a tenant key reached {method} {path}"
    if ROLE == "operator":
        # The catalog and the choices are no tenant's.
        assert for_tenant or path in ("/v1/event-types", "/v1/choices"), \
            f"an operator key reached {method} {path} without a tenant"
    if ROLE != "operator":
        assert not path.endswith("/events"), f"a {ROLE} key emitted an event"
    return None
