"""A webhook receiver for the demo: verifies each delivery with the official
Standard Webhooks library and prints what arrived. Loopback only."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
SECRET_FILE = sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        secret = open(SECRET_FILE).read().strip()
        try:
            Webhook(secret).verify(body, headers)
            verdict = "\033[32msignature verified\033[0m"
            status = 204
        except WebhookVerificationError as e:
            verdict = f"\033[31mREJECTED: {e}\033[0m"
            status = 400
        event = json.loads(body)
        print(
            f"  <- {event['event']:<18} webhook-id={headers['webhook-id']}  "
            f"sig={headers['webhook-signature'][:18]}...  {verdict}\n"
            f"     data={json.dumps(event['data'])[:110]}",
            flush=True,
        )
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
