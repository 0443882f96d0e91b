"""The settings portal in a real browser: headless Chromium (Debian's
chromium and chromedriver) driven by selenium, against the real postbox-api,
PostgreSQL, worker and loopback receivers that api/tests/portal.rs starts.

Environment: BASE (the API), ADMIN_LINK, MEMBER_LINK, KEYS_LINK (an admin
session allowed to manage API keys, for user u-ada), USED_LINK (already
used), EXPIRED_LINK, OPERATOR_KEY, TENANT, OK_URL, FAILING_URL and
HANGING_URL (receivers answering 200, 500, and never), MANY_LINK (a member
of a tenant with 600 endpoints), PREFIX_LINK (an admin link of a second API
reached through a proxy that adds the path PREFIX), SHOTS (where
screenshots go). Prints each step; exits non-zero at the first failure.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

E = os.environ
BASE, TENANT, SHOTS = E["BASE"], E["TENANT"], E["SHOTS"]
WAIT = 30
# A URL with markup, a quote and a space: stored percent-encoded, shown as typed.
TYPED_URL = E["OK_URL"] + '/<b>hooks</b>?q="a b"'


def step(name):
    print(f"step: {name}", flush=True)


def browser(width):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},1000"):
        opts.add_argument(a)
    # The console and the network, for failed_requests.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_script_timeout(WAIT)
    return d


def wait(d, cond):
    # The page re-renders as data arrives: an element found a moment ago
    # may be gone; look again.
    return WebDriverWait(d, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(cond)


def click(d, css):
    """Clicks what `css` finds, looking again if the page re-rendered it."""
    def go(d):
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    wait(d, go)


def by_id(d, i):
    return wait(d, EC.visibility_of_element_located((By.ID, i)))


def text_in(d, css, text):
    wait(d, EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def network(d):
    """The page's network events since the last look (the log is read once)."""
    return [json.loads(e["message"])["message"] for e in d.get_log("performance")]


def requested(events, part):
    """The URLs of the requests among `events` that contain `part`."""
    return [m["params"]["request"]["url"] for m in events
            if m["method"] == "Network.requestWillBeSent" and part in m["params"]["request"]["url"]]


def failed_requests(d, events=None):
    """What went wrong since the last look: requests answered 4xx or 5xx,
    requests that failed without an answer, and errors on the console
    (the browser's own favicon guess left out)."""
    bad = []
    for m in network(d) if events is None else events:
        if m["method"] == "Network.responseReceived":
            r = m["params"]["response"]
            if r["status"] >= 400 and not r["url"].endswith("/favicon.ico"):
                bad.append(f"{r['status']} {r['url']}")
        elif m["method"] == "Network.loadingFailed":
            bad.append(f"no answer: {m['params'].get('errorText')}")
    bad += [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    return bad


def scroll_width(d):
    return d.execute_script("return document.documentElement.scrollWidth")


def no_alert(d):
    try:
        d.switch_to.alert
    except NoAlertPresentException:
        return
    raise AssertionError("a script a tenant typed ran (an alert is open)")


def report(d):
    """What the page showed when a step failed: a screenshot and its text."""
    try:
        shot(d, "failure")
        print("page at failure:", d.current_url, "\n", d.find_element(By.TAG_NAME, "body").text[:2000], flush=True)
    except Exception as e:  # the report must not hide the failure
        print("no report:", e, flush=True)


def operator(method, path, body=None):
    req = urllib.request.Request(
        BASE + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + E["OPERATOR_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def fetch(d, method, path, body, csrf):
    """A request from the page itself, as a script in it (or another site's
    form, without the token) would send it; returns the status."""
    return d.execute_async_script(
        """const [method, path, body, csrf, done] = arguments;
        const headers = {'content-type': 'application/json'};
        if (csrf) headers['x-csrf-token'] = csrf;
        const init = {method, headers, credentials: 'same-origin'};
        if (method !== 'GET') init.body = JSON.stringify(body);
        fetch(path, init)
          .then(r => done(r.status), e => done(String(e)));""",
        method, path, body, csrf)


def csrf_of(d):
    return d.execute_async_script(
        "const done = arguments[0]; fetch('/v1/portal/session').then(r => r.json()).then(s => done(s.csrf_token));")


def main():
    d = browser(1440)
    try:
        step("a used link and an expired link open nothing")
        for link in (E["USED_LINK"], E["EXPIRED_LINK"], BASE + "/portal/enter?token=nonsense"):
            d.get(link)
            text_in(d, "h1", "This link has expired")
        d.get(BASE + "/portal/")
        text_in(d, "h1", "Your session has ended")

        step("the admin link opens the tenant's portal, and the token leaves the address bar")
        d.get(E["ADMIN_LINK"])
        text_in(d, "h1", "Endpoints")
        assert "token" not in d.current_url, d.current_url
        text_in(d, "#who", TENANT)
        shot(d, "01-list-empty-1440")

        step("create: the URL's error, and the headers' errors, each beside its field")
        by_id(d, "new-endpoint").click()
        by_id(d, "url").send_keys("ftp://hooks.example.com/x")
        by_id(d, "save").click()
        wait(d, lambda d: d.find_element(By.ID, "error-url").text.strip() != "")
        url_error = d.find_element(By.ID, "error-url").text
        # Words for a person, chosen by the rule's code (url_not_https), not the rule's text.
        assert url_error == "The address must start with https://.", url_error
        by_id(d, "url").clear()
        by_id(d, "url").send_keys(TYPED_URL)
        for _ in range(3):
            by_id(d, "add-header").click()
        names = d.find_elements(By.CSS_SELECTOR, ".header-name")
        values = d.find_elements(By.CSS_SELECTOR, ".header-value")
        values[0].send_keys("no name")
        names[1].send_keys("X-Team")
        values[1].send_keys("a")
        names[2].send_keys("x-team")
        values[2].send_keys("b")
        by_id(d, "save").click()
        errors = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".header-error")]
        assert errors[0] == "Name required" and errors[2].startswith("Duplicate"), errors
        # A reserved name: the API's rule, on its row (by the error's item), in words for a person.
        names[0].send_keys("Content-Type")
        names[2].clear()
        names[2].send_keys("X-Note")
        values[2].clear()
        values[2].send_keys("<script>alert('header')</script>")
        by_id(d, "save").click()
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".header-error")[0].text.strip() != "")
        reserved = d.find_elements(By.CSS_SELECTOR, ".header-error")[0].text
        assert reserved.startswith("This header is set by postbox"), reserved
        names[0].clear()
        names[0].send_keys("X Bad Name")
        by_id(d, "save").click()
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".header-error")[0].text.startswith("Header names hold"))
        assert not any(e.text.startswith("postbox:") for e in d.find_elements(By.CSS_SELECTOR, ".error")), \
            [e.text for e in d.find_elements(By.CSS_SELECTOR, ".error")]
        shot(d, "02-create-errors-1440")
        d.find_elements(By.XPATH, "//div[@class='header-row']/button")[0].click()  # remove it

        step("create with headers: the secret, once, with a copy button")
        d.find_element(By.ID, "event-all").click()  # all events off: choose some
        for label in d.find_elements(By.CSS_SELECTOR, "fieldset label.inline"):
            if label.text in ("order.paid", "webhook.test"):
                label.find_element(By.TAG_NAME, "input").click()
        description = "<script>alert('xss')</script> billing"
        by_id(d, "description").send_keys(description)
        by_id(d, "save").click()
        secret = by_id(d, "secret").text
        assert secret.startswith("whsec_"), secret
        assert d.find_element(By.XPATH, "//button[text()='Copy secret']").is_displayed()
        assert "will not be shown again" in d.page_source
        shot(d, "03-secret-1440")
        by_id(d, "to-endpoint").click()

        step("what a tenant typed is shown as text, the URL as typed (not percent-encoded)")
        text_in(d, "h1.url", TYPED_URL)
        assert d.find_element(By.CSS_SELECTOR, "h1.url").text == TYPED_URL
        assert not d.find_elements(By.CSS_SELECTOR, "h1.url b"), "a URL is text, not markup"
        text_in(d, ".events", "Events: order.paid, webhook.test")
        text_in(d, ".description", description)
        text_in(d, ".headers", "<script>alert('header')</script>")
        no_alert(d)
        assert len(d.find_elements(By.TAG_NAME, "script")) == 1
        assert secret not in d.page_source, "the secret is shown again"
        shot(d, "04-endpoint-1440")
        endpoint_url = d.current_url

        step("send a test (the default event), see its outcome, and the log below shows it without a reload")
        text_in(d, "#delivery-table", "No deliveries match.")
        by_id(d, "send-test").click()
        by_id(d, "test-send").click()
        text_in(d, "#test-outcome", "succeeded: HTTP 200")
        text_in(d, "#delivery-table tr.delivery .status", "Succeeded")
        shot(d, "05-test-1440")

        step("a test's outcome is no longer polled once the user leaves the screen")
        hanging = operator("POST", f"/v1/tenants/{TENANT}/endpoints", {
            "url": E["HANGING_URL"], "description": "never answers",
            "options": {"timeout_ms": 10000, "retry_schedule": []}})
        d.get(BASE + f"/portal/#/e/{hanging['id']}")
        text_in(d, "h1.url", "/hang")
        click(d, "#send-test")
        network(d)
        by_id(d, "test-send").click()
        polls = []
        wait(d, lambda d: polls.extend(requested(network(d), "/deliveries?")) or len(polls) >= 3)
        click(d, "header a.title")
        text_in(d, "h1", "Endpoints")
        time.sleep(0.3)
        network(d)  # a poll already under way when the user left
        time.sleep(2)
        late = requested(network(d), "/deliveries?")
        assert not late, late
        d.get(endpoint_url)

        step("pause, resume")
        by_id(d, "toggle").click()
        text_in(d, ".badge", "Paused")
        by_id(d, "toggle").click()
        text_in(d, ".badge", "Healthy")

        step("edit: the URL as typed")
        by_id(d, "edit").click()
        assert by_id(d, "url").get_attribute("value") == TYPED_URL
        field = by_id(d, "description")
        field.clear()
        field.send_keys("billing hooks")
        by_id(d, "save").click()
        text_in(d, ".description", "billing hooks")

        step("edit: batching, kept with the endpoint's other options; a value out of range names the rule")
        endpoint_id = endpoint_url.rsplit("/", 1)[1]
        operator("PATCH", f"/v1/tenants/{TENANT}/endpoints/{endpoint_id}", {"options": {"timeout_ms": 4000}})
        d.refresh()
        by_id(d, "edit").click()
        assert not by_id(d, "batching").is_selected()
        assert not by_id(d, "batch-max-events").is_enabled()
        by_id(d, "batching").click()
        events = by_id(d, "batch-max-events")
        events.clear()
        events.send_keys("5000")
        by_id(d, "save").click()
        text_in(d, "#error-options", "Out of range: send 2 to 1000 events per request")
        shot(d, "16-batching-error-1440")
        events.clear()
        events.send_keys("50")
        wait_ms = by_id(d, "batch-max-wait")
        wait_ms.clear()
        wait_ms.send_keys("250")
        by_id(d, "save").click()
        text_in(d, ".batching", "up to 50 events a request, waiting up to 250 ms")
        got = operator("GET", f"/v1/tenants/{TENANT}/endpoints/{endpoint_id}")["options"]
        assert got == {"timeout_ms": 4000, "batch_max_events": 50, "batch_max_wait_ms": 250}, got
        by_id(d, "edit").click()
        assert by_id(d, "batching").is_selected() and by_id(d, "batch-max-events").get_attribute("value") == "50"
        by_id(d, "batching").click()  # off again
        by_id(d, "save").click()
        text_in(d, ".description", "billing hooks")
        assert not d.find_elements(By.CSS_SELECTOR, ".batching")
        got = operator("GET", f"/v1/tenants/{TENANT}/endpoints/{endpoint_id}")["options"]
        assert got == {"timeout_ms": 4000}, got

        step("edit: ordering per key, what a given-up delivery does to its key, coalescing")
        by_id(d, "edit").click()
        assert not by_id(d, "ordering").is_selected()
        assert not by_id(d, "ordering-given-up").is_enabled()
        by_id(d, "ordering").click()
        Select(by_id(d, "ordering-given-up")).select_by_value("hold")
        by_id(d, "coalesce").click()
        shot(d, "17-ordering-1440")
        by_id(d, "save").click()
        text_in(d, ".ordering", "holds its key until retried")
        text_in(d, ".coalesce", "only the newest waiting event")
        got = operator("GET", f"/v1/tenants/{TENANT}/endpoints/{endpoint_id}")["options"]
        assert got == {"timeout_ms": 4000, "ordering": "key", "ordering_given_up": "hold", "coalesce": True}, got
        by_id(d, "edit").click()
        assert by_id(d, "ordering").is_selected() and by_id(d, "coalesce").is_selected()
        assert Select(by_id(d, "ordering-given-up")).first_selected_option.get_attribute("value") == "hold"
        by_id(d, "ordering").click()  # off again
        by_id(d, "coalesce").click()
        by_id(d, "save").click()
        text_in(d, ".description", "billing hooks")
        assert not d.find_elements(By.CSS_SELECTOR, ".ordering")
        assert not d.find_elements(By.CSS_SELECTOR, ".coalesce")
        got = operator("GET", f"/v1/tenants/{TENANT}/endpoints/{endpoint_id}")["options"]
        assert got == {"timeout_ms": 4000}, got

        step("rotate the secret, with the grace period")
        by_id(d, "rotate").click()
        by_id(d, "rotate-confirm").click()
        rotated = by_id(d, "secret").text
        assert rotated.startswith("whsec_") and rotated != secret
        assert "keeps signing until" in d.page_source

        step("a failing endpoint's badge, retry, replay")
        failing = operator("POST", f"/v1/tenants/{TENANT}/endpoints", {
            "url": E["FAILING_URL"], "description": "always 500", "options": {"retry_schedule": []}})
        operator("POST", f"/v1/tenants/{TENANT}/events", {"event_type": "order.paid", "data": {"order": 1}})
        d.get(BASE + "/portal/#/")
        deadline = time.time() + WAIT
        while True:
            d.refresh()
            badges = [b.text for b in wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".endpoint .badge"))]
            if "Failing" in badges:
                break
            assert time.time() < deadline, badges
            time.sleep(0.5)
        assert TYPED_URL in [a.text for a in d.find_elements(By.CSS_SELECTOR, ".endpoint a.url")]
        # The failing endpoint's chart: 24 hourly and 7 daily bars, a red part in the latest of each.
        card = [c for c in d.find_elements(By.CSS_SELECTOR, ".endpoint") if "always 500" in c.text][0]
        wait(d, lambda d: len(card.find_elements(By.CSS_SELECTOR, ".spark")) == 2)
        sparks = card.find_elements(By.CSS_SELECTOR, ".spark")
        assert [len(s.find_elements(By.CSS_SELECTOR, ".bar")) for s in sparks] == [24, 7]
        for s in sparks:
            latest = s.find_elements(By.CSS_SELECTOR, ".bar")[-1]
            assert float(latest.find_element(By.CSS_SELECTOR, ".f").get_attribute("height")) > 0, "no failure drawn"
        shot(d, "06-list-1440")
        d.get(BASE + f"/portal/#/e/{failing['id']}")
        Select(by_id(d, "filter-status")).select_by_value("failed")
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "tr.delivery"))
        shot(d, "07-deliveries-1440")
        d.find_element(By.CSS_SELECTOR, "tr.delivery a").click()
        text_in(d, ".outcome", "failed: HTTP 500")
        text_in(d, ".payload", '"order": 1')
        shot(d, "08-delivery-1440")
        by_id(d, "retry").click()
        text_in(d, "#toast", "Queued again")

        step("the retried delivery lists attempt 1 and attempt 2")
        deadline = time.time() + WAIT
        while True:
            d.refresh()
            text_in(d, "h1", "Delivery #")
            attempts = [a.text for a in d.find_elements(By.CSS_SELECTOR, ".attempt > .row > span.muted")]
            if len(attempts) >= 2:
                break
            assert time.time() < deadline, attempts
            time.sleep(0.5)
        assert attempts[0].startswith("attempt 1,") and attempts[1].startswith("attempt 2,"), attempts
        d.get(BASE + f"/portal/#/e/{failing['id']}")
        by_id(d, "replay-since").send_keys("01012020" + Keys.TAB + "0000AM")
        by_id(d, "replay").click()
        text_in(d, "#toast", "queued again")

        step("CSRF: a change without the session's token is refused")
        csrf = csrf_of(d)
        assert fetch(d, "PATCH", f"/v1/endpoints/{failing['id']}", {"description": "x"}, None) == 403
        assert fetch(d, "PATCH", f"/v1/endpoints/{failing['id']}", {"description": "x"}, "wrong") == 403
        assert fetch(d, "PATCH", f"/v1/endpoints/{failing['id']}", {"description": "x"}, csrf) == 200

        step("delete, after a confirmation")
        d.get(endpoint_url)
        text_in(d, "h1.url", TYPED_URL)
        click(d, "#delete")
        by_id(d, "delete-confirm").click()
        text_in(d, "h1", "Endpoints")
        wait(d, lambda d: sorted(a.text for a in d.find_elements(By.CSS_SELECTOR, ".endpoint a.url")) == sorted([
            E["FAILING_URL"], E["HANGING_URL"]]))

        step("375 px wide: the tenant's name on its own line at the left, under the title")
        d.set_window_size(375, 900)
        d.get(BASE + "/portal/#/")
        text_in(d, "h1", "Endpoints")
        assert scroll_width(d) <= 375, scroll_width(d)
        title = d.find_element(By.CSS_SELECTOR, "header .title").rect
        who = by_id(d, "who").rect
        assert abs(who["x"] - title["x"]) <= 1 and who["y"] >= title["y"] + title["height"] - 1, (title, who)
        shot(d, "09-list-375")

        step("375 px wide: a long header token wraps")
        token = "Bearer " + "0123456789abcdef" * 4
        long_header = operator("POST", f"/v1/tenants/{TENANT}/endpoints", {
            "url": E["OK_URL"] + "/long", "headers": {"Authorization": token}})
        d.get(BASE + f"/portal/#/e/{long_header['id']}")
        text_in(d, ".headers", token)
        assert scroll_width(d) <= 375, scroll_width(d)
        d.get(BASE + f"/portal/#/e/{failing['id']}")
        text_in(d, "h1.url", "/fail")
        by_id(d, "deliveries")
        assert d.execute_script("return document.documentElement.scrollWidth") <= 375
        shot(d, "10-endpoint-375")
        d.get(BASE + "/portal/#/new")
        by_id(d, "url")
        assert d.execute_script("return document.documentElement.scrollWidth") <= 375
        shot(d, "11-create-375")

        step("dark theme, and keyboard focus is visible")
        d.set_window_size(1440, 1000)
        d.get(BASE + "/portal/#/")
        by_id(d, "theme").click()
        assert d.execute_script("return document.documentElement.dataset.theme") == "dark"
        by_id(d, "theme").send_keys(Keys.TAB)
        focused = d.switch_to.active_element
        assert focused.get_attribute("href") or focused.tag_name in ("a", "button", "input"), focused.tag_name
        assert d.execute_script("return getComputedStyle(document.activeElement).outlineStyle") != "none"
        shot(d, "12-list-dark-1440")
    except Exception:
        report(d)
        raise
    finally:
        d.quit()

    step("a member sees everything and changes nothing")
    m = browser(1440)
    try:
        m.get(E["MEMBER_LINK"])
        text_in(m, "h1", "Endpoints")
        text_in(m, "#who", "view only")
        assert not m.find_elements(By.ID, "new-endpoint")
        m.find_element(By.CSS_SELECTOR, ".endpoint a.url").click()
        by_id(m, "deliveries")
        lines = m.find_element(By.ID, "main").text.splitlines()
        assert "null" not in [x.strip() for x in lines], lines
        for control in ("edit", "toggle", "rotate", "delete", "send-test", "replay"):
            assert not m.find_elements(By.ID, control), control
        csrf = csrf_of(m)
        assert fetch(m, "PATCH", f"/v1/endpoints/{failing['id']}", {"description": "member"}, csrf) == 403
        assert fetch(m, "POST", "/v1/endpoints", {"url": E["OK_URL"]}, csrf) == 403
        # Header values are masked for members, in the page and the API alike.
        with_header = operator("POST", f"/v1/tenants/{TENANT}/endpoints",
                               {"url": E["OK_URL"] + "/h", "headers": {"Authorization": "Bearer member-must-not-see"}})
        listed = m.execute_async_script(
            "const done = arguments[0]; fetch('/v1/endpoints').then(r => r.text()).then(done);")
        assert "member-must-not-see" not in listed and "********" in listed, listed
        m.get(BASE + f"/portal/#/e/{with_header['id']}")
        text_in(m, ".headers", "Authorization: ********")
        assert "member-must-not-see" not in m.page_source
        # Members have no key management, and no session without the grant has.
        assert not m.find_element(By.ID, "keys-link").is_displayed()
        assert fetch(m, "GET", "/v1/api-keys", None, csrf) == 403
        shot(m, "13-member-endpoint-1440")
    except Exception:
        report(m)
        raise
    finally:
        m.quit()
    step("600 endpoints: a page at a time, each page's charts in one request, and no request fails")
    n = browser(1440)
    try:
        n.get(E["MANY_LINK"])
        text_in(n, "h1", "Endpoints")
        pages = 1
        while True:
            shown = len(n.find_elements(By.CSS_SELECTOR, ".endpoint"))
            more = n.find_elements(By.ID, "more-endpoints")
            if not more:
                break
            more[0].click()
            pages += 1
            wait(n, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".endpoint")) > shown)
        ids = [c.get_attribute("data-id") for c in n.find_elements(By.CSS_SELECTOR, ".endpoint")]
        assert len(ids) == len(set(ids)) == 600 and pages > 1, (len(ids), len(set(ids)), pages)
        # Every card's chart arrives: two sparklines each.
        wait(n, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".endpoint .spark")) == 1200)
        events = network(n)
        bad = failed_requests(n, events)
        assert not bad, (len(bad), bad[:5])
        lists = requested(events, "/v1/endpoints?")
        stats = requested(events, "/v1/endpoints/stats?")
        assert len(lists) == len(stats) == pages, (len(lists), len(stats), pages)
    except Exception:
        report(n)
        raise
    finally:
        n.quit()

    step("behind a proxy that adds a path prefix: every request keeps it")
    p = browser(1440)
    try:
        p.get(E["PREFIX_LINK"])
        text_in(p, "h1", "Endpoints")
        base = E["PREFIX_LINK"].split("/portal/enter")[0]
        assert base.endswith(E["PREFIX"]) and p.current_url == base + "/portal/", p.current_url
        wait(p, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".endpoint .spark")) >= 2)
        p.get(base + f"/portal/#/e/{long_header['id']}")
        by_id(p, "deliveries")
        by_id(p, "send-test").click()
        by_id(p, "test-send").click()
        text_in(p, "#test-outcome", "succeeded: HTTP 200")
        p.get(base + "/portal/#/new")
        assert "sha256-hex" in [o.get_attribute("value") for o in Select(by_id(p, "signature-style")).options]
        # The default is named, as the API's /v1/choices tells it.
        assert Select(by_id(p, "signature-style")).options[0].text == "Default (standard)"
        bad = failed_requests(p)
        assert not bad, bad
        click(p, "#sign-out")
        text_in(p, "h1", "You have signed out")
        p.refresh()
        text_in(p, "h1", "Your session has ended")
    except Exception:
        report(p)
        raise
    finally:
        p.quit()

    step("API keys, where the product allows: generate (once), rotate, revoke; sign out")
    k = browser(1440)
    try:
        k.get(E["KEYS_LINK"])
        text_in(k, "h1", "Endpoints")
        click(k, "#keys-link")
        text_in(k, "h1", "API keys")
        by_id(k, "no-keys")
        click(k, "#generate-key")
        assert "API keys" in k.find_element(By.TAG_NAME, "h1").text
        assert k.execute_script("return document.getElementById('key-label').validity.valueMissing")
        by_id(k, "key-label").send_keys("<b>ci</b> deploys")
        click(k, "#generate-key")
        first = by_id(k, "api-key").text
        assert first.startswith("pbk_"), first
        text_in(k, ".key-label", "<b>ci</b> deploys")
        assert not k.find_elements(By.CSS_SELECTOR, ".key-label b"), "a label is text, not markup"
        shot(k, "14-api-keys-1440")
        # The key works, and only it is listed (not the operator's).
        req = urllib.request.Request(BASE + "/v1/endpoints", headers={"Authorization": "Bearer " + first})
        with urllib.request.urlopen(req) as r:
            assert r.status == 200
        assert len(k.find_elements(By.CSS_SELECTOR, "tr.key")) == 1
        click(k, ".rotate-key")
        wait(k, lambda d: d.find_element(By.ID, "api-key").text not in ("", first))
        second = k.find_element(By.ID, "api-key").text
        assert second.startswith("pbk_") and second != first
        try:
            urllib.request.urlopen(urllib.request.Request(BASE + "/v1/endpoints", headers={"Authorization": "Bearer " + first}))
            raise AssertionError("the rotated key still works")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        click(k, ".revoke-key")
        click(k, "#revoke-confirm")
        text_in(k, ".key-status", "revoked")
        # The keys record who made them.
        keys = operator("GET", f"/v1/tenants/{TENANT}/api-keys")["data"]
        mine = [x for x in keys if x["label"] == "<b>ci</b> deploys"]
        assert len(mine) == 1 and mine[0]["for_user"] == "u-ada" and mine[0]["made_by_session"], mine
        click(k, "#sign-out")
        text_in(k, "h1", "You have signed out")
        assert not [i for i in ("sign-out", "keys-link") if k.find_element(By.ID, i).is_displayed()]
        assert fetch(k, "GET", "/v1/endpoints", None, None) == 401, "the session has ended"
        k.refresh()
        text_in(k, "h1", "Your session has ended")
        shot(k, "15-signed-out-1440")
    except Exception:
        report(k)
        raise
    finally:
        k.quit()
    print("portal: every flow passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line for the Rust side, then the trace
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        raise
